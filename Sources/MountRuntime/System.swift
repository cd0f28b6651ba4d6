import CLinuxSupport
import Glibc

/// A file descriptor this process owns: closed exactly once, when the last reference to its
/// owner goes. Every descriptor the runtime opens lives in one of these from the moment it
/// exists, so no failure path can leak it.
final class Descriptor: Hashable, CustomStringConvertible, @unchecked Sendable {
  let raw: Int32

  init(_ raw: Int32) {
    precondition(raw >= 0, "a descriptor must be valid")
    self.raw = raw
  }

  deinit { Glibc.close(raw) }

  var description: String { "fd \(raw)" }

  static func == (lhs: Descriptor, rhs: Descriptor) -> Bool { lhs === rhs }
  func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

  /// Both ends of a new pipe (close-on-exec).
  static func pipe() throws(RuntimeError) -> (read: Descriptor, write: Descriptor) {
    var fds: [Int32] = [-1, -1]
    try system(.descriptors, "pipe") { mountsup_pipe(&fds) }
    return (Descriptor(fds[0]), Descriptor(fds[1]))
  }

  /// Both ends of a new `socketpair(AF_UNIX, type)` (close-on-exec).
  static func socketPair(_ type: Int32) throws(RuntimeError) -> (Descriptor, Descriptor) {
    var fds: [Int32] = [-1, -1]
    try system(.descriptors, "socketpair") {
      socketpair(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    }
    return (Descriptor(fds[0]), Descriptor(fds[1]))
  }

  func setNonBlocking() throws(RuntimeError) {
    let flags = try system(.descriptors, "fcntl(F_GETFL)") { fcntl(raw, F_GETFL) }
    try system(.descriptors, "fcntl(F_SETFL)") { fcntl(raw, F_SETFL, flags | O_NONBLOCK) }
  }

  /// One `read`, retried when interrupted: the byte count, 0 at end of file, nil when nothing
  /// is there now (EAGAIN). Other errors are thrown.
  func read(into buffer: UnsafeMutableRawBufferPointer) throws(RuntimeError) -> Int? {
    while true {
      let count = Glibc.read(raw, buffer.baseAddress, buffer.count)
      if count >= 0 { return count }
      switch errno {
      case EINTR: continue
      case EAGAIN: return nil
      case let code: throw RuntimeError(.io, "read", errno: code)
      }
    }
  }
}

extension Descriptor {
  /// One datagram, without waiting, with up to two descriptors passed along it (SCM_RIGHTS;
  /// they close with their wrappers unless kept): the byte count, 0 when the peer closed, nil
  /// when nothing is there now (EAGAIN). Retried when interrupted; other errors are thrown.
  func receive(into buffer: UnsafeMutableRawBufferPointer) throws(RuntimeError) -> (
    count: Int, descriptors: [Descriptor]
  )? {
    var passed: [Int32] = [-1, -1]
    var passedCount: Int32 = 0
    let count = mountsup_receive_with_fds(
      raw, buffer.baseAddress, buffer.count, &passed, Int32(passed.count), &passedCount)
    if count >= 0 {
      return (count, passed.prefix(Int(passedCount)).map { Descriptor($0) })
    }
    if errno == EAGAIN { return nil }
    throw RuntimeError(.io, "recvmsg", errno: errno)
  }

  /// One `send` that does not wait (and raises no SIGPIPE), retried when interrupted: the bytes
  /// sent, nil when the socket has no room now (EAGAIN). Other errors are thrown.
  func send(_ bytes: UnsafeRawBufferPointer) throws(RuntimeError) -> Int? {
    while true {
      let count = Glibc.send(
        raw, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
      if count >= 0 { return count }
      switch errno {
      case EINTR: continue
      case EAGAIN: return nil
      case let code: throw RuntimeError(.io, "send", errno: code)
      }
    }
  }
}

/// An error of the Linux runtime, in the style of swift-subprocess's `SubprocessError`: a code
/// a caller can act on, what was being done, and the errno behind it.
public struct RuntimeError: Error, CustomStringConvertible, Sendable {
  /// What kind of thing failed; extensible without breaking callers.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    public let name: String
    public var description: String { name }

    /// A descriptor, pipe or socket could not be made (often: out of descriptors).
    public static let descriptors = Code(name: "descriptors")
    public static let eventLoop = Code(name: "event-loop")
    public static let io = Code(name: "io")
    public static let mountTable = Code(name: "mount-table")
    public static let controlSocket = Code(name: "control-socket")
    public static let serviceManager = Code(name: "service-manager")
    /// The worker's command names no executable file.
    public static let executableNotFound = Code(name: "executable-not-found")
    /// `user` or `group` does not exist.
    public static let unknownAccount = Code(name: "unknown-account")
    /// A step between fork and exec failed (setsid, setuid, exec, ...).
    public static let spawn = Code(name: "spawn")
    public static let mountpoint = Code(name: "mountpoint")
    /// `[supervisor] metrics_listen` or `metrics_file`.
    public static let metrics = Code(name: "metrics")
    /// `[supervisor] watch_config`: the inotify watch of the configuration.
    public static let configWatch = Code(name: "config-watch")
    /// A helper thread (probes, unmounts, the hang check) could not be started.
    public static let thread = Code(name: "thread")
  }

  public var code: Code
  public var operation: String
  /// The errno behind the failure, 0 when there is none.
  public var errno: Int32

  public init(_ code: Code, _ operation: String, errno: Int32 = 0) {
    self.code = code
    self.operation = operation
    self.errno = errno
  }

  public var description: String {
    errno == 0 ? operation : "\(operation): \(errorText(errno))"
  }
}

/// Runs a system call, retrying it when a signal interrupts it; a negative result throws a
/// `RuntimeError` with the call's errno.
@discardableResult
func system<T: BinaryInteger>(
  _ code: RuntimeError.Code, _ operation: @autoclosure () -> String, _ call: () -> T
) throws(RuntimeError) -> T {
  while true {
    let result = call()
    if result >= 0 { return result }
    let failure = Glibc.errno
    if failure != EINTR { throw RuntimeError(code, operation(), errno: failure) }
  }
}

/// Retries a system call interrupted by a signal; returns its result, errno left as it was.
@discardableResult
func retryingOnInterrupt<T: BinaryInteger>(_ call: () -> T) -> T {
  while true {
    let result = call()
    if result >= 0 || errno != EINTR { return result }
  }
}

/// `strerror` as a Swift string.
func errorText(_ code: Int32) -> String {
  String(cString: strerror(code))
}

/// `mkdir -p`; `created` runs for every directory it made (to give it to a worker's user).
func makeDirectories(_ path: String, mode: mode_t = 0o755, created: (String) -> Void = { _ in })
  throws(RuntimeError)
{
  // From the deepest: an existing directory (every mountpoint after the first start) costs one
  // call, not one per component.
  var missing: [String] = []
  var current = path
  while !current.isEmpty, current != "/" {
    if mkdir(current, mode) == 0 {
      created(current)
      break
    }
    guard errno == ENOENT else {
      if errno == EEXIST { break }
      throw RuntimeError(.mountpoint, "cannot create the directory \(current)", errno: errno)
    }
    missing.append(current)
    current = parentDirectory(of: current)
  }
  for directory in missing.reversed() {
    guard mkdir(directory, mode) == 0 || errno == EEXIST else {
      throw RuntimeError(.mountpoint, "cannot create the directory \(directory)", errno: errno)
    }
    created(directory)
  }
}

/// `/a/b/c` → `/a/b`; `/a` → `/`.
private func parentDirectory(of path: String) -> String {
  var trimmed = Substring(path)
  while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed.removeLast() }
  guard let slash = trimmed.lastIndex(of: "/") else { return "" }
  return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
}
