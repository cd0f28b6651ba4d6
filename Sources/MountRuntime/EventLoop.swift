import CLinuxSupport
import Glibc

/// Identifies a worker start: a new one for every spawn, so that a late event of an earlier
/// worker can never be taken for the current one's.
typealias WorkerID = Int

/// Everything the supervisor waits on. The loop reports sources, not callbacks: the runtime
/// turns each into events for one queue, so no handler ever runs inside another.
enum Source: Hashable {
  case signals
  case timer
  case watchdog
  /// The service manager's notify socket, while messages wait for room in its queue.
  case serviceManager
  case mountTable
  case controlListener
  case controlClient(Int)
  case workerExit(WorkerID)
  case workerMessages(WorkerID)
  case workerOutput(WorkerID)
  /// Mode `notify`: the worker's own NOTIFY_SOCKET.
  case workerNotifySocket(WorkerID)
  /// The answers of work run off the loop (probes, `statfs` of a mount that may hang).
  case offLoop(Int)
  /// Mounts with requests waiting, from the periodic hang check.
  case hangWatcher
  /// The new binary of an upgrade answering `--can-resume` (its pidfd).
  case upgradeCheck
  /// `[supervisor] metrics_listen`: the listening socket and its HTTP clients.
  case metricsListener
  case metricsClient(Int)
  /// `[supervisor] watch_config`: the inotify descriptor of the configuration's directories.
  case configWatch
}

/// One epoll over every source. It blocks until something happens, so an idle supervisor makes
/// no wake-ups; level-triggered, so a source the runtime reads only partly (a budget per turn)
/// is reported again on the next turn.
final class EventLoop {
  private let epoll: Descriptor
  private var sources: [UInt64: Source] = [:]
  private var tokens: [Int32: UInt64] = [:]
  private var nextToken: UInt64 = 1
  private var events = [epoll_event](repeating: epoll_event(), count: 256)

  static let readable = EPOLLIN.rawValue
  static let writable = EPOLLOUT.rawValue
  /// /proc/self/mountinfo signals a changed mount table with POLLPRI.
  static let priority = EPOLLPRI.rawValue

  init() throws(RuntimeError) {
    epoll = Descriptor(
      try system(.eventLoop, "epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
  }

  func add(_ fd: Descriptor, as source: Source, events: UInt32 = readable) throws(RuntimeError) {
    try add(raw: fd.raw, as: source, events: events)
  }

  /// Watches a descriptor that another object owns (and keeps open while it is watched).
  func add(raw fd: Int32, as source: Source, events: UInt32 = readable) throws(RuntimeError) {
    let token = nextToken
    nextToken += 1
    var event = epoll_event()
    event.events = events
    event.data.u64 = token
    try system(.eventLoop, "epoll_ctl(ADD, fd \(fd))") {
      epoll_ctl(epoll.raw, EPOLL_CTL_ADD, fd, &event)
    }
    sources[token] = source
    tokens[fd] = token
  }

  /// Changes what is watched on an added descriptor.
  func change(_ fd: Descriptor, events: UInt32) throws(RuntimeError) {
    guard let token = tokens[fd.raw] else { return }
    var event = epoll_event()
    event.events = events
    event.data.u64 = token
    try system(.eventLoop, "epoll_ctl(MOD, \(fd))") {
      epoll_ctl(epoll.raw, EPOLL_CTL_MOD, fd.raw, &event)
    }
  }

  /// Stops watching `fd`; call it before the descriptor is closed.
  func remove(_ fd: Descriptor) {
    guard let token = tokens.removeValue(forKey: fd.raw) else { return }
    sources[token] = nil
    epoll_ctl(epoll.raw, EPOLL_CTL_DEL, fd.raw, nil)
  }

  /// Waits for sources to become ready (`timeout` in milliseconds, -1 for as long as it takes)
  /// and returns them with their epoll flags.
  func wait(timeout: Int32) -> [(source: Source, events: UInt32)] {
    let count = events.withUnsafeMutableBufferPointer {
      epoll_wait(epoll.raw, $0.baseAddress, Int32($0.count), timeout)
    }
    guard count > 0 else { return [] }
    return events.prefix(Int(count)).compactMap { event in
      sources[event.data.u64].map { ($0, event.events) }
    }
  }
}

/// The loop's single timerfd, armed at the earliest deadline (absolute, CLOCK_MONOTONIC).
final class DeadlineTimer {
  let fd: Descriptor
  private var armedAt: UInt64?

  init() throws(RuntimeError) {
    fd = Descriptor(
      try system(.eventLoop, "timerfd_create") {
        timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
      })
  }

  /// Arms the timer at `nanoseconds`, or disarms it for nil; a no-op when nothing changed.
  func arm(at nanoseconds: UInt64?) {
    guard nanoseconds != armedAt else { return }
    armedAt = nanoseconds
    var spec = itimerspec()
    if let nanoseconds {
      // 0 would disarm; a deadline in the past must still fire.
      let at = max(nanoseconds, 1)
      spec.it_value = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
    }
    timerfd_settime(fd.raw, Int32(TFD_TIMER_ABSTIME), &spec, nil)
  }

  /// Consumes the expiration count after the fd became readable.
  func acknowledge() {
    var expirations: UInt64 = 0
    _ = read(fd.raw, &expirations, 8)
    armedAt = nil
  }
}
