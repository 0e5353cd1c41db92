//! `ErrorCode`: the error classes every misim error maps to, at every protocol edge.

/// The small set of error classes that every misim error maps to. `misim-proto`
/// maps them to gRPC codes and `misim-runtime` to HTTP statuses. Add variants
/// reluctantly: each one is a promise to every caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed (400).
    InvalidArgument,
    /// No or bad credentials (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    PermissionDenied,
    /// The thing does not exist (404).
    NotFound,
    /// The thing exists already (409).
    AlreadyExists,
    /// The system is not in a state that allows the request (409/412).
    FailedPrecondition,
    /// Throttled (429).
    TooManyRequests,
    /// A dependency is down; retry later (503).
    Unavailable,
    /// A bug or a broken invariant (500).
    Internal,
}
