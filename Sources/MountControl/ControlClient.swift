import Glibc

/// Why the client could not get an answer; ``kind`` decides `mountctl`'s exit code.
public struct ControlClientError: Error, CustomStringConvertible, Sendable {
  public enum Kind: Sendable {
    /// No daemon could be reached through the socket (missing, stale, not a socket).
    case unreachable
    /// The kernel refused the connection: the caller may not use the socket (`EACCES`). The
    /// daemon may well be running; a health check must not take this for "down".
    case permissionDenied
    /// The daemon closed the connection, or sent something that is not a response.
    case broken
    /// No answer within the client's timeout.
    case timeout
  }

  public var kind: Kind
  public var message: String

  public init(_ kind: Kind, _ message: String) {
    self.kind = kind
    self.message = message
  }

  public var description: String { message }
}

/// A blocking connection to the daemon's control socket: what `mountctl` uses. Each call waits
/// at most as long as it is told to, so a hung daemon cannot hang a script forever.
public final class ControlClient {
  public let socketPath: String
  private let fd: Int32
  private var buffer: [UInt8] = []

  /// Connects, waiting at most `connectTimeout` (a daemon whose listen queue is full).
  public init(socketPath: String, connectTimeout: Duration = .seconds(5)) throws(ControlClientError)
  {
    self.socketPath = socketPath
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    let bytes = Array(socketPath.utf8)
    guard !bytes.isEmpty, bytes.count < capacity else {
      throw ControlClientError(
        .unreachable,
        "cannot use the control socket \(socketPath): the path must have 1 to \(capacity - 1) bytes"
      )
    }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
      raw.copyBytes(from: bytes)
      raw[bytes.count] = 0
    }
    fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else {
      throw ControlClientError(
        .unreachable, "cannot create a socket: \(String(cString: strerror(errno)))")
    }
    var limit = timeval(duration: connectTimeout)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
    let result = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
      }
    }
    guard result == 0 else {
      // Not closed here: a class whose initializer throws once every property is set still
      // runs its deinit, which closes it. Closing twice closed whatever another thread had
      // opened under the same number in between (seen as EBADF in parallel tests).
      throw Self.connectFailure(socketPath, errno)
    }
  }

  deinit {
    if fd >= 0 { close(fd) }
  }

  private static func connectFailure(_ path: String, _ code: Int32) -> ControlClientError {
    let prefix = "cannot reach mountsupd through the control socket \(path)"
    switch code {
    case ENOENT:
      return ControlClientError(
        .unreachable,
        "\(prefix): it does not exist (is mountsupd running? give its socket with --socket PATH)")
    case ECONNREFUSED:
      // The kernel says the same for a socket file nobody listens on and for a path that is no
      // socket at all; only the first is a stale socket.
      if let kind = nonSocketKind(path) {
        return ControlClientError(
          .unreachable,
          "\(prefix): it is \(kind), not a socket (is --socket or MOUNTSUP_SOCKET right? "
            + "[supervisor] control_socket of mounts.toml names the daemon's socket)")
      }
      return ControlClientError(
        .unreachable,
        "\(prefix): nothing listens on it (mountsupd is not running; the socket is stale)")
    case ENOTDIR:
      return ControlClientError(
        .unreachable, "\(prefix): a component of the path is not a directory")
    case EACCES, EPERM:
      return ControlClientError(
        .permissionDenied,
        "permission denied for the control socket \(path) (only root and members of the "
          + "supervisor's admin_group or status_group may use it; you are uid \(getuid()))")
    case EAGAIN, EINPROGRESS:
      return ControlClientError(
        .unreachable,
        "\(prefix): it accepts no connection in time (the daemon is overloaded or hung)")
    default:
      return ControlClientError(.unreachable, "\(prefix): \(String(cString: strerror(code)))")
    }
  }

  /// What `path` is when it exists but is not a socket ("a regular file", "a directory"); nil
  /// for a socket or when it cannot be told.
  private static func nonSocketKind(_ path: String) -> String? {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    switch info.st_mode & S_IFMT {
    case S_IFSOCK: return nil
    case S_IFREG: return "a regular file"
    case S_IFDIR: return "a directory"
    case S_IFIFO: return "a FIFO"
    case S_IFCHR, S_IFBLK: return "a device"
    default: return "another kind of file"
    }
  }

  /// Sends one request line.
  public func send(_ request: ControlRequest) throws(ControlClientError) {
    let line = ControlProtocol.encodeLine(request)
    var sent = 0
    while sent < line.count {
      let count = line[sent...].withUnsafeBytes {
        Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
      }
      if count < 0 {
        if errno == EINTR { continue }
        if errno == EAGAIN {
          throw ControlClientError(
            .timeout, "mountsupd does not read its control socket \(socketPath)")
        }
        throw ControlClientError(
          .broken, "lost the connection to mountsupd: \(String(cString: strerror(errno)))")
      }
      sent += count
    }
  }

  /// Waits for the next response line; nil `timeout` waits as long as the daemon keeps the
  /// connection open.
  public func receive(timeout: Duration?) throws(ControlClientError) -> ControlResponse {
    let deadline = timeout.map { ContinuousClock.now + $0 }
    while true {
      if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
        let line = buffer[..<newline]
        defer { buffer.removeSubrange(...newline) }
        return try decode(line)
      }
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      var wait: Int32 = -1
      if let deadline {
        let left = ContinuousClock.now.duration(to: deadline)
        guard left > .zero else {
          throw ControlClientError(
            .timeout, "mountsupd did not answer within \(Self.text(timeout!))")
        }
        wait = Int32(
          clamping: left.components.seconds * 1000 + left.components.attoseconds
            / 1_000_000_000_000_000 + 1)
      }
      let ready = poll(&poller, 1, wait)
      if ready < 0 {
        if errno == EINTR { continue }
        throw ControlClientError(.broken, "poll: \(String(cString: strerror(errno)))")
      }
      if ready == 0 { continue }
      var chunk = [UInt8](repeating: 0, count: 65536)
      let count = read(fd, &chunk, chunk.count)
      if count < 0 {
        if errno == EINTR || errno == EAGAIN { continue }
        throw ControlClientError(
          .broken, "lost the connection to mountsupd: \(String(cString: strerror(errno)))")
      }
      if count == 0 {
        throw ControlClientError(.broken, "mountsupd closed the connection (is it stopping?)")
      }
      buffer += chunk.prefix(count)
    }
  }

  /// Sends a request and waits for its first response.
  public func request(_ request: ControlRequest, timeout: Duration?) throws(ControlClientError)
    -> ControlResponse
  {
    try send(request)
    return try receive(timeout: timeout)
  }

  private func decode(_ line: ArraySlice<UInt8>) throws(ControlClientError) -> ControlResponse {
    if let envelope = try? ControlProtocol.decode(ControlEnvelope.self, from: line),
      envelope.version != ControlProtocol.version
    {
      throw ControlClientError(
        .broken,
        "mountsupd speaks control protocol version \(envelope.version), this mountctl version "
          + "\(ControlProtocol.version): use the mountctl of the same release")
    }
    do {
      return try ControlProtocol.decode(ControlResponse.self, from: line)
    } catch {
      throw ControlClientError(
        .broken, "mountsupd sent an invalid response: \(ControlProtocol.describe(error))")
    }
  }

  private static func text(_ duration: Duration) -> String {
    let milliseconds =
      duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
  }
}

extension timeval {
  fileprivate init(duration: Duration) {
    let (seconds, attoseconds) = duration.components
    self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
  }
}
