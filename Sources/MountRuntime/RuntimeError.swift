import Glibc

/// An error of the Linux runtime, in the style of swift-subprocess's `SubprocessError`: what was
/// being done, the errno behind it, and text a person can act on.
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
  public var operation: String
  public var errno: Int32

  public init(_ operation: String, errno: Int32 = Glibc.errno) {
    self.operation = operation
    self.errno = errno
  }

  public var description: String { "\(operation): \(errorText(errno))" }
}

/// `strerror` as a Swift string.
func errorText(_ code: Int32) -> String {
  String(cString: strerror(code))
}

/// Retries a system call interrupted by a signal.
@discardableResult
func retryingOnInterrupt<T: BinaryInteger>(_ call: () -> T) -> T {
  while true {
    let result = call()
    if result >= 0 || errno != EINTR { return result }
  }
}
