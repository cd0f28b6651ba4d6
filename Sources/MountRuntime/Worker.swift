import CLinuxSupport
import Glibc
import MountCore

/// A worker process as the event loop sees it: its pidfd, our end of its notify socketpair, the
/// read end of its output pipe, and what the mount table held at its mountpoint before it
/// started. The descriptors close with it.
final class Worker {
  let id: WorkerID
  let mount: String
  let pid: pid_t
  let pidfd: Descriptor
  /// Our end of the socketpair; nil once the worker closed its end.
  var messages: Descriptor?
  /// Read end of the worker's stdout and stderr; nil at end of file.
  var output: Descriptor?
  /// Mode `notify`: the worker's own NOTIFY_SOCKET.
  var notifySocket: WorkerNotifySocket?
  var lines = LineSplitter()
  /// The mountpoint it was started for (a reload may change the spec while it runs).
  let mountpoint: String
  /// FUSE mount ids at the mountpoint before the spawn: only a mount not in here is this worker's.
  let baseline: Set<UInt64>
  /// The worker's FUSE mount once the mount table has shown it.
  var mountID: UInt64?
  /// Mode `probe`: the probe in flight.
  var probe: OffLoopWork?
  /// The probe of a ready mount with requests waiting, while it is unanswered.
  var hangProbe: OffLoopWork?

  init(
    id: WorkerID, mount: String, pid: pid_t, pidfd: Descriptor, messages: Descriptor?,
    output: Descriptor?, mountpoint: String, baseline: Set<UInt64>
  ) {
    self.id = id
    self.mount = mount
    self.pid = pid
    self.pidfd = pidfd
    self.messages = messages
    self.output = output
    self.mountpoint = mountpoint
    self.baseline = baseline
  }

  /// Signals the worker through its pidfd (never a recycled pid) and its process group (helpers
  /// it started, such as sshfs's ssh). Only while it is not reaped: until then its pid and its
  /// group's id cannot be reused.
  func signal(_ signal: Int32) {
    kill(-pid, signal)
    mountsup_pidfd_signal(pidfd.raw, signal)
  }

  /// Reaps the worker if it has exited.
  func reap() -> ExitStatus? {
    var code: Int32 = 0
    var signal: Int32 = 0
    guard mountsup_reap(pidfd.raw, &code, &signal) == 1 else { return nil }
    return signal != 0 ? .signaled(signal) : .exited(code)
  }
}
