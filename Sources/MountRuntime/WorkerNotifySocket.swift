import CLinuxSupport
import Glibc

/// Mode `notify`: a `NOTIFY_SOCKET` of the worker's own, for programs that speak sd_notify
/// (rclone). It lives in the abstract namespace, so it needs no directory and vanishes with the
/// fd; `SO_PASSCRED` makes the kernel attach each sender's pid, and only the worker's session
/// counts.
struct WorkerNotifySocket {
  let fd: Int32
  /// The value for the worker's `NOTIFY_SOCKET`.
  let address: String

  init(mount name: String, attempt: Int) throws {
    fd = socket(
      AF_UNIX,
      Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard fd >= 0 else { throw RuntimeError("socket(AF_UNIX, SOCK_DGRAM)") }
    let abstractName = "mountsup/\(getpid())/\(name)/\(attempt)"
    address = "@" + abstractName
    var socketAddress = sockaddr_un()
    socketAddress.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(abstractName.utf8.prefix(100))
    withUnsafeMutableBytes(of: &socketAddress.sun_path) { path in
      path[0] = 0  // abstract namespace
      for (index, byte) in bytes.enumerated() { path[index + 1] = byte }
    }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
    let bound = withUnsafePointer(to: &socketAddress) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0, mountsup_enable_passcred(fd) == 0 else {
      let error = RuntimeError("bind \(address)")
      close(fd)
      throw error
    }
  }

  /// Reads every pending datagram; keeps those sent by a process of the worker's session.
  func receive(fromSessionOf worker: pid_t) -> [[UInt8]] {
    var messages: [[UInt8]] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      var sender: pid_t = 0
      let got = mountsup_recv_with_pid(fd, &buffer, buffer.count, &sender)
      guard got >= 0 else { break }
      guard sender == worker || mountsup_session_of(sender) == worker else { continue }
      messages.append(Array(buffer.prefix(min(got, buffer.count))))
    }
    return messages
  }
}
