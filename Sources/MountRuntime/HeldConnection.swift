import CLinuxSupport
import Glibc
import MountCore

/// A kit worker's FUSE connection, which the supervisor holds for the life of the mount: a
/// duplicate of the worker's `/dev/fuse` descriptor (the connection lives while one is open),
/// the worker's state memfd, and the raw FUSE_INIT request that a successor replays to libfuse.
/// When the worker crashes, its successor gets all three (see `sendResume`) and serves the
/// same kernel mount; closing them once no worker serves it makes the kernel abort the
/// connection, so that waiting accesses fail instead of hanging.
final class HeldConnection {
  let fuse: Descriptor
  let state: Descriptor?
  let initRequest: [UInt8]
  /// The kernel mount it serves, for the successor's view of the mount table.
  let mountID: UInt64?

  init(fuse: Descriptor, state: Descriptor?, initRequest: [UInt8], mountID: UInt64?) {
    self.fuse = fuse
    self.state = state
    self.initRequest = initRequest
    self.mountID = mountID
  }

  /// The resume datagram a successor reads first on its fd 3: `FUSE_INIT=<hex>` with the FUSE
  /// descriptor and the state descriptor. Sent before the spawn; it waits in the socket.
  func sendResume(on channel: Descriptor) throws(RuntimeError) {
    let digits = Array("0123456789abcdef".utf8)
    var text = Array("FUSE_CONNECTION=1\nFUSE_INIT=".utf8)
    for byte in initRequest {
      text.append(digits[Int(byte >> 4)])
      text.append(digits[Int(byte & 15)])
    }
    let fds = [fuse.raw] + (state.map { [$0.raw] } ?? [])
    let code = text.withUnsafeBytes { bytes in
      mountsup_send_with_fds(channel.raw, bytes.baseAddress, bytes.count, fds, Int32(fds.count))
    }
    guard code == 0 else {
      throw RuntimeError(.io, "cannot pass the FUSE connection to the successor", errno: code)
    }
  }
}
