//! The names a decision and the metrics share: why a subset was chosen, and
//! the class of the response it got. Both are labels of the metric schema
//! (`reason`, `class`), so they live apart from either.

/// Why a subset was chosen. Also the `reason` label of the request counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A rule matched.
    Rule = 0,
    /// A sticky key was hashed against the weights.
    Hash = 1,
    /// No sticky key, but a pin cookie: the pin was hashed.
    Pin = 2,
    /// No sticky key and no pin: a random draw by weight (or a new pin's hash).
    Random = 3,
    /// The decision could not be made (a host read failed): `default_subset`.
    Fallback = 4,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Rule,
        Reason::Hash,
        Reason::Pin,
        Reason::Random,
        Reason::Fallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Hash => "hash",
            Reason::Pin => "pin",
            Reason::Random => "random",
            Reason::Fallback => "fallback",
        }
    }

    /// Position in [`Reason::ALL`] (the layout of the metric tables).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A response status class, as counted per subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    // Discriminants are positions in `ALL` (the layout of the metric tables).
    Success = 0,
    Redirect = 1,
    ClientError = 2,
    ServerError = 3,
    /// A gRPC call that ended with `grpc-status` 0.
    GrpcOk = 4,
    /// A gRPC call that ended with a code `grpc.failure_codes` lists.
    GrpcError = 5,
    /// A gRPC call that ended with any other code (NOT_FOUND, CANCELLED, ...).
    GrpcOther = 6,
}

impl ResponseClass {
    pub const ALL: [ResponseClass; 7] = [
        ResponseClass::Success,
        ResponseClass::Redirect,
        ResponseClass::ClientError,
        ResponseClass::ServerError,
        ResponseClass::GrpcOk,
        ResponseClass::GrpcError,
        ResponseClass::GrpcOther,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseClass::Success => "2xx",
            ResponseClass::Redirect => "3xx",
            ResponseClass::ClientError => "4xx",
            ResponseClass::ServerError => "5xx",
            ResponseClass::GrpcOk => "grpc_ok",
            ResponseClass::GrpcError => "grpc_error",
            ResponseClass::GrpcOther => "grpc_other",
        }
    }

    /// A failure for the success rate and the brake: a 5xx, or a gRPC call
    /// that ended with a failing code.
    pub fn is_failure(self) -> bool {
        matches!(self, ResponseClass::ServerError | ResponseClass::GrpcError)
    }

    /// The class of an HTTP `:status` value; `None` for 1xx and anything unreadable.
    pub fn from_status(status: &[u8]) -> Option<ResponseClass> {
        match status {
            [b'2', _, _] => Some(ResponseClass::Success),
            [b'3', _, _] => Some(ResponseClass::Redirect),
            [b'4', _, _] => Some(ResponseClass::ClientError),
            [b'5', _, _] => Some(ResponseClass::ServerError),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(
            ResponseClass::from_status(b"200"),
            Some(ResponseClass::Success)
        );
        assert_eq!(
            ResponseClass::from_status(b"302"),
            Some(ResponseClass::Redirect)
        );
        assert_eq!(
            ResponseClass::from_status(b"404"),
            Some(ResponseClass::ClientError)
        );
        assert_eq!(
            ResponseClass::from_status(b"503"),
            Some(ResponseClass::ServerError)
        );
        assert_eq!(ResponseClass::from_status(b"101"), None);
        assert_eq!(ResponseClass::from_status(b"20"), None);
        assert_eq!(ResponseClass::from_status(b""), None);
    }
}
