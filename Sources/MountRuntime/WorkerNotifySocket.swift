import CLinuxSupport
import Glibc

/// Mode `notify`: a `NOTIFY_SOCKET` of the worker's own, for programs that speak sd_notify
/// (rclone). It lives in the abstract namespace, so it needs no directory and vanishes with the
/// descriptor; `SO_PASSCRED` makes the kernel attach each sender's pid, and only the worker's
/// session counts.
struct WorkerNotifySocket {
  let fd: Descriptor
  /// The value for the worker's `NOTIFY_SOCKET`.
  let address: String

  /// The name holds the supervisor's pid and the worker's serial number, never the mount's
  /// name, so that it fits `sun_path` whatever the name's length.
  init(worker: WorkerID) throws(RuntimeError) {
    fd = Descriptor(
      try system(.descriptors, "socket(AF_UNIX, SOCK_DGRAM)") {
        socket(
          AF_UNIX,
          Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            | Int32(SOCK_NONBLOCK.rawValue), 0)
      })
    let name = "mountsup/\(getpid())/worker-\(worker)"
    address = "@" + name
    let socketAddress = UnixAddress(abstract: name)!
    let fd = fd
    try system(.descriptors, "bind \(address)") {
      socketAddress.withSocketAddress { bind(fd.raw, $0, $1) }
    }
    try system(.descriptors, "SO_PASSCRED on \(address)") { mountsup_enable_passcred(fd.raw) }
  }

  /// The socket of a worker an upgrade handed over.
  init(fd: Descriptor, address: String) {
    self.fd = fd
    self.address = address
  }

  /// Reads every pending datagram; keeps those sent by a process of the worker's session.
  func receive(fromSessionOf worker: pid_t) -> [[UInt8]] {
    var messages: [[UInt8]] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      var sender: pid_t = 0
      let got = mountsup_recv_with_pid(fd.raw, &buffer, buffer.count, &sender)
      guard got >= 0 else {
        if errno == EINTR { continue }
        break
      }
      guard sender == worker || mountsup_session_of(sender) == worker else { continue }
      messages.append(Array(buffer.prefix(min(got, buffer.count))))
    }
    return messages
  }
}
