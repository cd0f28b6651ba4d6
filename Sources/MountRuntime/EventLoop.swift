import CLinuxSupport
import Glibc

/// One epoll over every source the supervisor waits on: pidfds, worker sockets and pipes, the
/// signalfd, the timerfd, the control socket and mountinfo. It blocks until something happens,
/// so an idle supervisor makes no wake-ups.
///
/// Single-threaded by design: handlers run on the loop's thread, one at a time.
final class EventLoop {
  typealias Handler = (_ events: UInt32) -> Void

  private let epollFD: Int32
  private var handlers: [UInt64: (fd: Int32, handler: Handler)] = [:]
  private var tokens: [Int32: UInt64] = [:]
  private var nextToken: UInt64 = 1

  init() throws {
    epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
    guard epollFD >= 0 else { throw RuntimeError("epoll_create1") }
  }

  deinit { close(epollFD) }

  static let readable = EPOLLIN.rawValue
  /// /proc/self/mountinfo signals a changed mount table with POLLPRI.
  static let priority = EPOLLPRI.rawValue

  func add(_ fd: Int32, events: UInt32 = readable, handler: @escaping Handler) throws {
    let token = nextToken
    nextToken += 1
    var event = epoll_event()
    event.events = events
    event.data.u64 = token
    guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else {
      throw RuntimeError("epoll_ctl(ADD, fd \(fd))")
    }
    handlers[token] = (fd, handler)
    tokens[fd] = token
  }

  /// Stops watching `fd`; the caller still owns and closes it.
  func remove(_ fd: Int32) {
    guard let token = tokens.removeValue(forKey: fd) else { return }
    handlers[token] = nil
    epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
  }

  /// Waits for events and runs their handlers; returns after one batch.
  func runOnce() {
    var events = [epoll_event](repeating: epoll_event(), count: 64)
    let count = epoll_wait(epollFD, &events, Int32(events.count), -1)
    guard count > 0 else { return }
    for event in events.prefix(Int(count)) {
      // A handler earlier in the batch may have removed this source.
      guard let entry = handlers[event.data.u64] else { continue }
      entry.handler(event.events)
    }
  }
}

/// The loop's single timerfd, armed at the core's earliest deadline (absolute, CLOCK_MONOTONIC).
final class DeadlineTimer {
  let fd: Int32
  private var armedAt: UInt64?

  init() throws {
    fd = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_CLOEXEC | TFD_NONBLOCK))
    guard fd >= 0 else { throw RuntimeError("timerfd_create") }
  }

  deinit { close(fd) }

  /// Arms the timer at `deadline`, or disarms it for nil; a no-op when nothing changed.
  func arm(at nanoseconds: UInt64?) {
    guard nanoseconds != armedAt else { return }
    armedAt = nanoseconds
    var spec = itimerspec()
    if let nanoseconds {
      // 0 would disarm; a deadline in the past must still fire.
      let at = max(nanoseconds, 1)
      spec.it_value = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
    }
    timerfd_settime(fd, Int32(TFD_TIMER_ABSTIME), &spec, nil)
  }

  /// Consumes the expiration count after the fd became readable.
  func acknowledge() {
    var expirations: UInt64 = 0
    _ = read(fd, &expirations, 8)
    armedAt = nil
  }
}
