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
}

enum OperatorAction {
  case start, stop, restart
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
  }

  private let socket: ControlSocket
  unowned let host: any ControlHost
  private let loop: EventLoop
  let logger: Logger
  private var clients: [Int: Client] = [:]
  private var nextClientID = 1
  /// Clients with complete requests left over after their share of a turn.
  private var backlog: Set<Int> = []
  /// Clients whose operation was queued this turn: evaluated once the supervisor took it.
  private var submitted: [Int] = []
  /// Accepting stopped because the process ran out of descriptors; resumed when a client goes.
  private var acceptPaused = false
  /// `admin_group` and `status_group` resolved to ids, redone only when their names change, so
  /// that a request never waits for the user database.
  private var groupIDs: (names: [String?], ids: [gid_t?]) = ([], [])

  /// The ids of `admin_group` and `status_group` of the current configuration, nil if unset.
  var adminAndStatusGroupIDs: (admin: gid_t?, status: gid_t?) {
    let settings = host.currentConfiguration.supervisor
    let names = [settings.adminGroup, settings.statusGroup]
    if groupIDs.names != names {
      groupIDs = (names, names.map { $0.flatMap(Accounts.groupID(of:)) })
    }
    return (groupIDs.ids[0], groupIDs.ids[1])
  }

  init(host: any ControlHost, loop: EventLoop, logger: Logger) throws {
    self.host = host
    self.loop = loop
    self.logger = logger
    socket = try ControlSocket.open(settings: host.currentConfiguration.supervisor, logger: logger)
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
        let waitingFor = names.filter { core.report(of: $0)?.state != .ready }
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

  // MARK: Connections

  func acceptClients() {
    while true {
      // Workers are spawned on this thread only, with every other descriptor closed, so setting
      // the flags after accept leaves no window for a leak.
      let raw = accept(socket.fd.raw, nil, nil)
      if raw < 0 {
        if errno == EINTR || errno == ECONNABORTED { continue }
        let code = errno
        if code == EMFILE || code == ENFILE {
          // The queued connection would wake the loop forever: stop watching until one closes.
          logger.error(
            "control socket: cannot accept a client: \(errorText(code)); pausing until one disconnects"
          )
          loop.remove(socket.fd)
          acceptPaused = true
        }
        return
      }
      let fd = Descriptor(raw)
      _ = fcntl(raw, F_SETFD, FD_CLOEXEC)
      guard (try? fd.setNonBlocking()) != nil, clients.count < Self.clientLimit,
        let peer = ControlPeer(fd: raw)
      else {
        let refusal = ControlProtocol.encodeLine(
          ControlResponse.failure(
            .tooManyClients, "too many control connections (\(Self.clientLimit)); try again"))
        _ = refusal.withUnsafeBytes {
          Glibc.send(raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        continue
      }
      let client = Client(id: nextClientID, fd: fd, peer: peer, now: .now())
      nextClientID += 1
      do {
        try loop.add(fd, as: .controlClient(client.id), events: events(for: client))
      } catch {
        continue
      }
      clients[client.id] = client
    }
  }

  /// Readable until its input ended (and while it has room for more requests), writable while
  /// answers wait. Hang-ups are always reported.
  private func events(for client: Client) -> UInt32 {
    var events = client.watchingWritable ? EventLoop.writable : 0
    if !client.inputEnded, !client.readingPaused {
      events |= EventLoop.readable | EPOLLRDHUP.rawValue
    }
    return events
  }

  /// Unanswered requests beyond this wait in the socket, not in the daemon: a client that
  /// pipelines is read as fast as it is answered.
  static let inputBacklogLimit = 8 * ControlProtocol.maximumRequestLength
  /// Answers beyond this wait for the client to read before more requests are handled.
  static let outputBacklogLimit = 256 * 1024

  /// Stops or resumes reading a client, so that neither its unanswered requests nor its unread
  /// answers pile up in the daemon.
  private func pace(_ client: Client) {
    let paused = client.input.count >= Self.inputBacklogLimit
    guard paused != client.readingPaused, !client.closed else { return }
    client.readingPaused = paused
    do {
      try loop.change(client.fd, events: events(for: client))
    } catch {
      drop(client, reason: "\(error)")
    }
  }

  private func watch(_ client: Client, writable: Bool) {
    guard client.watchingWritable != writable else { return }
    client.watchingWritable = writable
    do {
      try loop.change(client.fd, events: events(for: client))
    } catch {
      drop(client, reason: "\(error)")
    }
  }

  func clientEvent(_ id: Int, _ events: UInt32) {
    guard let client = clients[id] else { return }
    if events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
      // Both directions are gone: nobody is left to answer.
      drop(client, reason: nil)
      return
    }
    if events & EventLoop.writable != 0 { flush(client) }
    if !client.closed, events & (EventLoop.readable | EPOLLRDHUP.rawValue) != 0 {
      readInput(client)
    }
  }

  /// Serves the clients whose pipelined requests exceeded their share of the last turn.
  func serveBacklog() {
    let ids = backlog
    backlog.removeAll()
    for id in ids {
      if let client = clients[id], !client.closed { processInput(client) }
    }
  }

  /// Reads what has arrived, a bounded amount per turn; level-triggered epoll reports the rest.
  private func readInput(_ client: Client) {
    var chunk = [UInt8](repeating: 0, count: 16384)
    for _ in 0..<4 where !client.closed && client.input.count < Self.inputBacklogLimit {
      let result = chunk.withUnsafeMutableBytes { buffer in
        Result { () throws(RuntimeError) in try client.fd.read(into: buffer) }
      }
      guard case .success(let read) = result else {
        drop(client, reason: nil)
        return
      }
      guard let count = read else { break }
      if count > 0 {
        if client.closeWhenFlushed { continue }
        client.input += chunk.prefix(count)
        if client.input.count > ControlProtocol.maximumRequestLength, !client.hasCompleteRequest {
          let limit = ControlProtocol.maximumRequestLength
          logger.notice(
            "control client \(client.peer.description) sent more than \(limit) bytes unanswered; dropped"
          )
          client.input.removeAll()
          respond(
            client,
            .failure(
              .requestTooLong,
              "a request line may have at most \(limit) bytes, and requests must wait for their answers; closing"
            ),
            thenClose: true)
          return
        }
        continue
      }
      // The client shut down its sending side (`socat`, `nc -N`): it still gets the answers
      // to what it sent, then the connection closes.
      client.inputEnded = true
      if !client.closeWhenFlushed, !client.input.isEmpty, client.input.last != UInt8(ascii: "\n") {
        client.input.append(UInt8(ascii: "\n"))
      }
      do {
        try loop.change(client.fd, events: events(for: client))
      } catch {
        drop(client, reason: "\(error)")
        return
      }
      break
    }
    processInput(client)
  }

  /// Handles complete request lines, one at a time (a line that waits holds back the next), at
  /// most `requestsPerTurn` of them; the rest wait in the backlog for the next turn.
  private func processInput(_ client: Client) {
    var handled = 0
    var start = 0
    while !client.closed, !client.closeWhenFlushed, client.pending == nil,
      let newline = client.input[start...].firstIndex(of: UInt8(ascii: "\n"))
    {
      guard handled < Self.requestsPerTurn, client.unsent < Self.outputBacklogLimit else {
        // The rest waits for the next turn, or for the client to read its answers.
        if client.unsent < Self.outputBacklogLimit { backlog.insert(client.id) }
        break
      }
      let line = client.input[start..<newline]
      start = newline + 1
      if line.count > ControlProtocol.maximumRequestLength {
        respond(
          client,
          .failure(
            .requestTooLong,
            "a request line may have at most \(ControlProtocol.maximumRequestLength) bytes; closing"
          ),
          thenClose: true)
      } else if !line.allSatisfy({
        $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\t")
      }) {
        handled += 1
        handle(Array(line), from: client)
      }
    }
    if start > 0, !client.closed { client.input.removeFirst(start) }
    pace(client)
    if client.inputEnded, client.pending == nil, client.unsent == 0, !client.hasCompleteRequest {
      drop(client, reason: nil)
    }
  }

  /// Answers the client's current request (or refuses its line); the next request may follow.
  func respond(_ client: Client, _ response: ControlResponse, thenClose: Bool = false) {
    guard !client.closed else { return }
    client.pending = nil
    client.requestDeadline = thenClose || client.inputEnded ? nil : .now() + Self.requestTimeout
    if thenClose { client.closeWhenFlushed = true }
    send(response, to: client)
    if !client.closed, client.hasCompleteRequest { backlog.insert(client.id) }
    if !client.closed, client.inputEnded, client.unsent == 0, !client.hasCompleteRequest {
      drop(client, reason: nil)
    }
  }

  /// Queues one response line (also a streamed one that does not end the request).
  func send(_ response: ControlResponse, to client: Client) {
    let line = ControlProtocol.encodeLine(response)
    guard client.unsent + line.count <= Self.outputLimit else {
      drop(client, reason: "it did not read \(Self.outputLimit >> 20) MiB of answers")
      return
    }
    client.output += line
    flush(client)
  }

  private func flush(_ client: Client) {
    var progressed = false
    while !client.closed, client.sent < client.output.count {
      let result = client.output[client.sent...].withUnsafeBytes { bytes in
        Result { () throws(RuntimeError) in try client.fd.send(bytes) }
      }
      switch result {
      case .success(let count?) where count > 0:
        client.sent += count
        progressed = true
        continue
      case .success(nil):
        break
      case .success, .failure:
        drop(client, reason: nil)
        return
      }
      break
    }
    guard !client.closed else { return }
    if client.sent == client.output.count {
      client.output.removeAll(keepingCapacity: client.output.count < 1 << 16)
      client.sent = 0
      client.writeDeadline = nil
      if client.closeWhenFlushed
        || (client.inputEnded && client.pending == nil && !client.hasCompleteRequest)
      {
        drop(client, reason: nil)
        return
      }
      watch(client, writable: false)
    } else {
      if progressed || client.writeDeadline == nil {
        client.writeDeadline = .now() + Self.writeTimeout
      }
      if client.sent > 1 << 20 {
        client.output.removeFirst(client.sent)
        client.sent = 0
      }
      watch(client, writable: true)
    }
    if case .logs = client.pending, client.unsent < Self.followLimit / 2 { sendLogPiece(client) }
    if client.pending == nil, client.unsent < Self.outputBacklogLimit, client.hasCompleteRequest {
      backlog.insert(client.id)
    }
  }

  /// Sends the next piece of a `logs` answer, small enough for a slow reader.
  private func sendLogPiece(_ client: Client) {
    guard case .logs(let name, var lines, let follow) = client.pending else { return }
    var piece: [String] = []
    var size = 0
    while let line = lines.first, piece.isEmpty || size + line.utf8.count < Self.followLimit / 4 {
      piece.append(line)
      size += line.utf8.count + 8
      lines.removeFirst()
    }
    if !lines.isEmpty {
      client.pending = .logs(name, lines, follow: follow)
      send(ControlResponse(lines: piece, more: true), to: client)
    } else if follow {
      client.pending = .follow(name)
      send(ControlResponse(lines: piece, more: true), to: client)
    } else {
      respond(client, ControlResponse(lines: piece))
    }
  }

  /// Starts a `logs` answer.
  func sendLogs(_ lines: [String], of name: String, follow: Bool, to client: Client) {
    client.pending = .logs(name, lines, follow: follow)
    sendLogPiece(client)
  }

  /// Marks a client whose operation was queued: it is evaluated after the supervisor's step.
  func submitted(_ client: Client) {
    submitted.append(client.id)
  }

  private func drop(_ client: Client, reason: String?) {
    guard !client.closed else { return }
    if let reason { logger.notice("control client \(client.peer.description) dropped: \(reason)") }
    client.closed = true
    client.pending = nil
    loop.remove(client.fd)
    clients[client.id] = nil
    backlog.remove(client.id)
    if acceptPaused {
      acceptPaused = false
      try? loop.add(socket.fd, as: .controlListener)
    }
  }
}
