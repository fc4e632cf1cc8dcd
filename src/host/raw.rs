//! The one host call the SDK's wrapper makes too expensive for the request path.
//!
//! `hostcalls::get_map_bytes` turns the host's serialized header map into a
//! `String` and a `Vec` per header, and panics (traps the VM) on an unexpected
//! status. This reads the same buffer and hands it over as it is: the request
//! indexes it in place ([`crate::header_map::SerializedPairs`]), and a failed
//! call is an error the decision falls back on.
#![allow(unsafe_code)]

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
extern "C" {
    // The ABI's signature; the status is taken as a plain u32 so that a value
    // this SDK does not know is an error, not an invalid enum.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// `Status::Ok` in the Proxy-Wasm ABI.
const OK: u32 = 0;

/// The serialized pairs of a header map; an empty buffer when the map is empty.
pub(crate) fn header_map_bytes(map_type: MapType) -> Result<Vec<u8>, u32> {
    let mut data: *mut u8 = core::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length through the two out
    // pointers, which point at live locals of the right types.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    if status != OK {
        return Err(status);
    }
    if data.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: the host allocated `size` bytes at `data` by calling this module's
    // `proxy_on_memory_allocate` (the SDK's: a boxed slice of exactly `size`
    // bytes, leaked) and hands us ownership; the SDK's own `get_map_bytes`
    // takes the buffer back the same way.
    Ok(unsafe { Vec::from_raw_parts(data, size, size) })
}
