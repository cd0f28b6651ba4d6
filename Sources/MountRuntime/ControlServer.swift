import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountControl
import MountCore

/// What the control server needs from the supervisor it serves; `Supervisor` implements it.
/// Reads go straight to the core's queries; anything that changes what runs is queued for the
/// supervisor's next step and answered once the mounts got there.
protocol ControlHost: AnyObject {
  /// Every mount's state, read-only.
  var supervisorCore: SupervisorCore { get }
  var currentConfiguration: Configuration { get }
  /// The STATUS line: the core's, plus the last reload error while there is one.
  var serviceStatus: String { get }
  var isReloading: Bool { get }
  func outputLines(of name: String) -> [String]
  /// Queues an operator's start, stop or restart of these mounts.
  func submit(_ action: OperatorAction, _ names: [String])
  /// Queues a reload; `completion` gets its outcome once it has settled.
  func requestReload(_ completion: @escaping (ReloadCoordinator.Outcome) -> Void)
  /// Starts an upgrade to `binary` (nil: the file the daemon was started from); the requester
  /// is answered by the new binary, or by this one when it refuses.
  func requestUpgrade(binary: String?, requester: ControlServer.Client?)
  /// The daemon's start (seconds since the epoch), its upgrades and the time of the last one.
  var lifetime: (startedAt: Double, upgrades: Int, lastUpgradeAt: Double?) { get }
  /// The metrics in the Prometheus text format, as of now.
  func metricsExposition() -> [UInt8]
}

enum OperatorAction {
  case start, stop, restart, abort
}

/// The daemon's end of the control socket: it speaks the protocol, and nothing else.
///
/// The loop never blocks on a client: sockets are non-blocking, a request line is capped at
/// ``ControlProtocol/maximumRequestLength``, answers wait in a bounded buffer, and a client that
/// sends no request in time or does not read its answers is dropped when the loop's timer
/// reaches its deadline. Each client gets a bounded share of a loop turn (`requestsPerTurn`);
/// a client that pipelines more is served over the following turns, after supervision.
/// Requests that wait (start, stop, restart, reload, wait-ready) are answered when the mounts
/// they wait for change: no polling, and no re-check of mounts that did not change.
final class ControlServer {
  /// A client must send a complete request this soon after connecting or after its last answer.
  static let requestTimeout: Duration = .seconds(5)
  /// A client with answers waiting must take some of them this often.
  static let writeTimeout: Duration = .seconds(10)
  /// Answers buffered for one client beyond this mean it does not read: it is dropped.
  static let outputLimit = 4 << 20
  /// A follower of `logs -f` whose unread output exceeds this misses lines (counted, and said)
  /// instead of being dropped; `logs` sends its lines in pieces below it.
  static let followLimit = 1 << 20
  static let clientLimit = 256
  static let requestsPerTurn = 16

  /// One connection.
  final class Client {
    let id: Int
    let fd: Descriptor
    let peer: ControlPeer
    var input: [UInt8] = []
    var output: [UInt8] = []
    /// Bytes at the start of `output` already sent.
    var sent = 0
    var pending: Pending?
    var closeWhenFlushed = false
    /// The client shut down its sending side; it is closed once its answers are out.
    var inputEnded = false
    var closed = false
    var watchingWritable = false
    /// By when a complete request must have arrived; nil while one is being answered.
    var requestDeadline: MonotonicInstant?
    /// By when some of the buffered answers must have been taken; nil when none wait.
    var writeDeadline: MonotonicInstant?
    /// Bytes the kernel still held for the client at the last check: a slow reader takes from
    /// the socket's buffer long before the socket reports room for more.
    var queuedInSocket: Int32 = .max
    /// `logs -f`: lines not sent because the client reads too slowly.
    var missedLines = 0
    /// Reading stopped while enough unanswered requests wait in `input`.
    var readingPaused = false

    init(id: Int, fd: Descriptor, peer: ControlPeer, now: MonotonicInstant) {
      self.id = id
      self.fd = fd
      self.peer = peer
      requestDeadline = now + ControlServer.requestTimeout
    }

    var unsent: Int { output.count - sent }

    var isFollowing: Bool {
      switch pending {
      case .follow, .logs(_, _, follow: true): true
      default: false
      }
    }

    /// Whether the client took bytes from the socket since the last check (SIOCOUTQ).
    var isReadingFromSocket: Bool {
      var queued: Int32 = 0
      guard ioctl(fd.raw, UInt(TIOCOUTQ), &queued) == 0 else { return false }
      defer { queuedInSocket = queued }
      return queued < queuedInSocket
    }
    var hasCompleteRequest: Bool { input.contains(UInt8(ascii: "\n")) }
  }

  /// A request that is answered later.
  enum Pending {
    /// Waiting for `remaining` of `names` to reach the action's goal.
    case operation(OperatorAction, [String], remaining: Set<String>)
    case waitReady(
      [String], remaining: Set<String>, deadline: MonotonicInstant?, timeout: Duration?)
    case reload
    /// `logs`: lines still to send, then follow the mount's output if `follow`.
    case logs(String, [String], follow: Bool)
    case follow(String)
    /// `upgrade`: answered by the new binary, or on a refusal.
    case upgrade
  }

  let socket: ControlSocket
  unowned let host: any ControlHost
  let loop: EventLoop
  let logger: Logger
  var clients: [Int: Client] = [:]
  var nextClientID = 1
  /// Clients with complete requests left over after their share of a turn.
  var backlog: Set<Int> = []
  /// Clients whose operation was queued this turn: evaluated once the supervisor took it.
  var submitted: [Int] = []
  /// Accepting stopped because the process ran out of descriptors; resumed when a client goes.
  var acceptPaused = false
  /// `admin_group` and `status_group` resolved to ids, redone only when their names change, so
  /// that a request never waits for the user database.
  var groupIDs: (names: [String?], ids: [gid_t?]) = ([], [])

  /// The ids of `admin_group` and `status_group` of the current configuration, nil if unset.
  var adminAndStatusGroupIDs: (admin: gid_t?, status: gid_t?) {
    let settings = host.currentConfiguration.supervisor
    let names = [settings.adminGroup, settings.statusGroup]
    if groupIDs.names != names {
      groupIDs = (names, names.map { $0.flatMap(Accounts.groupID(of:)) })
    }
    return (groupIDs.ids[0], groupIDs.ids[1])
  }

  /// - Parameter adopting: the listening socket an upgrade handed over; nil opens one.
  init(
    host: any ControlHost, loop: EventLoop, logger: Logger,
    adopting carried: UpgradeState.ControlRecord? = nil, passed: PassedDescriptors = .init()
  ) throws {
    self.host = host
    self.loop = loop
    self.logger = logger
    if let carried {
      mountsup_set_cloexec(carried.listener, 1)
      let ownFile = carried.ownFileDevice.flatMap { device in
        carried.ownFileInode.map { (device: device, inode: $0) }
      }
      socket = ControlSocket(fd: Descriptor(carried.listener), path: carried.path, ownFile: ownFile)
    } else {
      socket = try ControlSocket.open(
        settings: host.currentConfiguration.supervisor, passed: passed.controlSocket,
        unusedSockets: passed.unusedSockets, logger: logger)
    }
    do {
      try loop.add(socket.fd, as: .controlListener)
    } catch {
      socket.close()
      throw error
    }
  }

  /// Closes every connection and the socket (removing its file if this daemon made it).
  func close() {
    for client in Array(clients.values) {
      flush(client)
      drop(client, reason: nil)
    }
    loop.remove(socket.fd)
    socket.close()
  }

  var hasBacklog: Bool { !backlog.isEmpty }

  /// Before the exec of an upgrade: every client but `requester` is told to retry and closed;
  /// what the new binary takes over is returned.
  func prepareForUpgrade(keeping requester: Client?) -> UpgradeState.ControlRecord {
    for client in Array(clients.values) where client !== requester {
      respond(
        client,
        .failure(
          .upgrading, "mountsupd is upgrading to a new binary; retry (it serves again at once)"),
        thenClose: true)
      drop(client, reason: nil)
    }
    return UpgradeState.ControlRecord(
      listener: socket.fd.raw, path: socket.path, ownFileDevice: socket.ownFile?.device,
      ownFileInode: socket.ownFile?.inode, requester: requester?.fd.raw)
  }

  /// After the exec of an upgrade: the `mountctl upgrade` that asked gets the answer.
  func answerUpgradeRequester(_ fd: Int32?, with response: ControlResponse) {
    guard let fd else { return }
    mountsup_set_cloexec(fd, 1)
    let descriptor = Descriptor(fd)
    guard let peer = ControlPeer(fd: fd), (try? descriptor.setNonBlocking()) != nil else { return }
    let client = Client(id: nextClientID, fd: descriptor, peer: peer, now: .now())
    nextClientID += 1
    guard
      (try? loop.add(descriptor, as: .controlClient(client.id), events: events(for: client)))
        != nil
    else { return }
    clients[client.id] = client
    respond(client, response, thenClose: true)
  }

  /// The earliest client deadline, for the loop's timer.
  var nextDeadline: MonotonicInstant? {
    clients.values.flatMap { client -> [MonotonicInstant] in
      var deadlines = [client.requestDeadline, client.writeDeadline].compactMap { $0 }
      if case .waitReady(_, _, let deadline?, _) = client.pending { deadlines.append(deadline) }
      return deadlines
    }.min()
  }

  /// Re-checks the requests that wait on mounts that changed.
  func mountsChanged(_ changed: Set<String>) {
    for client in Array(clients.values) where !client.closed {
      evaluate(client, changed: changed)
    }
  }

  /// Evaluates the operations queued this turn, which the supervisor has now carried out.
  func evaluateSubmitted() {
    let ids = submitted
    submitted.removeAll()
    for id in ids {
      if let client = clients[id], !client.closed { evaluate(client, changed: nil) }
    }
  }

  /// Drops clients past their deadlines and answers `wait-ready` requests that ran out of time.
  func timerFired(now: MonotonicInstant) {
    for client in Array(clients.values) where !client.closed {
      if let deadline = client.writeDeadline, deadline <= now {
        // A follower may pause (a terminal on hold, a pager): what it misses meanwhile is
        // counted and said, and what waits for it is bounded by `followLimit`.
        if client.isReadingFromSocket || client.isFollowing {
          client.writeDeadline = now + Self.writeTimeout
          continue
        }
        drop(client, reason: "it did not read its answers for \(formatDuration(Self.writeTimeout))")
      } else if let deadline = client.requestDeadline, deadline <= now {
        logger.notice("control client \(client.peer.description) sent no complete request; dropped")
        respond(
          client,
          .failure(
            .clientTimeout,
            "no complete request within \(formatDuration(Self.requestTimeout)); closing"),
          thenClose: true)
      } else if case .waitReady(let names, _, let deadline?, let timeout) = client.pending,
        deadline <= now
      {
        let core = host.supervisorCore
        let waitingFor = names.filter { core.machines[$0]?.isReady != true }
        let details = waitingFor.map { "\($0): \(core.detail(of: $0))" }.joined(separator: "; ")
        respond(
          client,
          .failure(
            .timeout, "not ready within \(formatDuration(timeout ?? .zero)): \(details)",
            mounts: statuses(names)))
      }
    }
  }

  /// A line a worker printed: sent to every client that follows that mount's output.
  func outputAppended(_ line: String, of name: String) {
    for client in clients.values where !client.closed {
      if case .logs(name, var lines, follow: true) = client.pending {
        // Still sending the kept lines: this one goes after them, up to a bound.
        if lines.count < OutputLog.capacity {
          lines.append(line)
          client.pending = .logs(name, lines, follow: true)
        } else {
          client.missedLines += 1
        }
        continue
      }
      guard case .follow(name) = client.pending else { continue }
      guard client.unsent < Self.followLimit else {
        client.missedLines += 1
        continue
      }
      var lines = [line]
      if client.missedLines > 0 {
        let count = client.missedLines
        lines.insert(
          "[\(count) line\(count == 1 ? "" : "s") not sent: mountctl read too slowly]", at: 0)
        client.missedLines = 0
      }
      send(ControlResponse(lines: lines, more: true), to: client)
    }
  }
}
