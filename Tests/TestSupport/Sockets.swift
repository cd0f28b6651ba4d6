import Foundation
import Glibc

/// A close-on-exec unix socket of `type` (`SOCK_STREAM`, `SOCK_DGRAM`, possibly with
/// `SOCK_NONBLOCK`) on which `operation` (bind, connect) succeeded for `path`, so that no test
/// fills a `sockaddr_un` itself; throws saying what failed ("cannot \(what) PATH: …").
public func unixSocket(
  _ type: Int32, at path: String, _ what: String,
  _ operation: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
) throws -> Int32 {
  var address = sockaddr_un()
  let bytes = Array(path.utf8)
  guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
    throw TestFailure("cannot \(what) \(path): the path is too long for a unix socket")
  }
  address.sun_family = sa_family_t(AF_UNIX)
  withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
  let fd = socket(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0)
  guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
  let result = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      operation(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
    }
  }
  guard result == 0 else {
    let failure = TestFailure("cannot \(what) \(path): \(String(cString: strerror(errno)))")
    close(fd)
    throw failure
  }
  return fd
}

/// A NOTIFY_SOCKET for the daemon, as a service manager has one. It records every datagram with
/// the FUSE mounts present at the instant it arrived.
public final class NotifyReceiver {
  /// One datagram, and the mountpoints of the FUSE mounts in the table when it arrived (what
  /// proves that READY came after the mounts).
  public struct Message {
    public var text: String
    public var fuseMountpoints: Set<String>
  }

  /// The socket's path, for NOTIFY_SOCKET.
  public let path: String
  private let fd: Int32
  /// Every datagram received so far, oldest first.
  public private(set) var messages: [Message] = []

  public init(in sandbox: Sandbox) throws {
    path = sandbox.path + "/notify.sock"
    let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
    fd = try unixSocket(type, at: path, "bind") { bind($0, $1, $2) }
    // A daemon running as another user must be able to send.
    chmod(path, 0o666)
  }

  deinit { close(fd) }

  /// Receives until a message satisfies `match` or the deadline passes. What is already queued
  /// is always read, even after the deadline: on a loaded machine the reading of one message
  /// (with the mount table) can outlast a short deadline while the next one waits.
  @discardableResult
  public func wait(within deadline: Duration = .seconds(15), for match: (String) -> Bool)
    -> Message?
  {
    if let found = messages.first(where: { match($0.text) }) { return found }
    let end = ContinuousClock.now + deadline
    while true {
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      let left = max(0, ContinuousClock.now.duration(to: end) / .milliseconds(1))
      guard poll(&poller, 1, Int32(left)) > 0 else {
        if left == 0 { break }
        continue
      }
      var buffer = [UInt8](repeating: 0, count: 65536)
      let got = recv(fd, &buffer, buffer.count, 0)
      guard got > 0 else {
        if left == 0 { break }
        continue
      }
      let fuse = Set(mountTable().filter(\.isFUSE).map(\.mountpoint))
      let message = Message(
        text: String(decoding: buffer.prefix(got), as: UTF8.self), fuseMountpoints: fuse)
      messages.append(message)
      if match(message.text) { return message }
    }
    return nil
  }

  /// Takes what has arrived (and what arrives within 50 ms); returns every message so far.
  @discardableResult
  public func drain() -> [Message] {
    wait(within: .milliseconds(50)) { _ in false }
    return messages
  }

  /// How many messages have `line` as one of their lines.
  public func count(_ line: String) -> Int {
    messages.filter { $0.text.split(separator: "\n").contains { $0 == line } }.count
  }
}
