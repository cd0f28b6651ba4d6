import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountControl
import MountCore

/// What the control server needs from the supervisor it serves; `Supervisor` implements it.
protocol ControlHost: AnyObject {
  /// Every mount's state, read-only.
  var supervisorCore: SupervisorCore { get }
  var currentConfiguration: Configuration { get }
  var serviceNotifier: ServiceNotifier { get }
  /// The STATUS line: the core's, plus the last reload error while there is one.
  var serviceStatus: String { get }
  func outputLines(of name: String) -> [String]
  /// Carries out an operator's start, stop or restart of one mount at once.
  func operate(_ action: OperatorAction, on name: String)
  /// Reads, validates and applies the configuration; throws, changing nothing, when invalid.
  func applyConfiguration() throws -> SupervisorCore.ReloadSummary
  /// Re-arms the loop's timer after the server's deadlines changed.
  func rearmTimer()
}

enum OperatorAction {
  case start, stop, restart
}

/// The daemon's end of the control socket, on the supervisor's event loop.
///
/// The loop never blocks on a client: sockets are non-blocking, a request line is capped at
/// ``ControlProtocol/maximumRequestLength``, answers wait in a bounded buffer, and a client that
/// sends no request in time or does not read its answers is dropped when the loop's timer
/// reaches its deadline. Requests that wait (start, stop, restart, reload, wait-ready) are
/// answered from ``stateChanged()``, which the supervisor calls after every step: no polling.
final class ControlServer {
  /// A client must send a complete request this soon after connecting or after its last answer.
  static let requestTimeout: Duration = .seconds(5)
  /// A client with answers waiting must take some of them this often.
  static let writeTimeout: Duration = .seconds(10)
  /// Answers buffered for one client beyond this mean it does not read: it is dropped.
  static let outputLimit = 4 << 20
  static let clientLimit = 256

  /// One connection.
  final class Client {
    let fd: Int32
    let peer: ControlPeer
    var input: [UInt8] = []
    var output: [UInt8] = []
    /// Bytes at the start of `output` already sent.
    var sent = 0
    var pending: Pending?
    /// `processInput` runs for this client (answers given meanwhile must not re-enter it).
    var processing = false
    var closeWhenFlushed = false
    /// The client shut down its sending side; it is closed once its answers are out.
    var inputEnded = false
    var closed = false
    var watchingWritable = false
    /// By when a complete request must have arrived; nil while one is being answered.
    var requestDeadline: MonotonicInstant?
    /// By when some of the buffered answers must have been taken; nil when none wait.
    var writeDeadline: MonotonicInstant?

    init(fd: Int32, peer: ControlPeer, now: MonotonicInstant) {
      self.fd = fd
      self.peer = peer
      requestDeadline = now + ControlServer.requestTimeout
    }
  }

  /// A request that is answered later.
  enum Pending {
    case operation(OperatorAction, [String])
    case waitReady([String], deadline: MonotonicInstant?, timeout: Duration?)
    case reload
    case follow(String)
  }

  private let socket: ControlSocket
  unowned let host: any ControlHost
  private let loop: EventLoop
  let logger: Logger
  private var clients: [Int32: Client] = [:]
  /// Accepting stopped because the process ran out of descriptors; resumed when a client goes.
  private var acceptPaused = false
  let reloads: ReloadQueue
  /// `admin_group` and `status_group` resolved to ids, redone only when their names change, so
  /// that a request never waits for the user database.
  private var groupIDs: (names: [String?], ids: [gid_t?]) = ([], [])

  /// The ids of `admin_group` and `status_group` of the current configuration, nil if unset.
  var adminAndStatusGroupIDs: (admin: gid_t?, status: gid_t?) {
    let settings = host.currentConfiguration.supervisor
    let names = [settings.adminGroup, settings.statusGroup]
    if groupIDs.names != names { groupIDs = (names, names.map { $0.flatMap(groupID(of:)) }) }
    return (groupIDs.ids[0], groupIDs.ids[1])
  }

  init(host: any ControlHost, loop: EventLoop, logger: Logger) throws {
    self.host = host
    self.loop = loop
    self.logger = logger
    socket = try ControlSocket.open(settings: host.currentConfiguration.supervisor, logger: logger)
    reloads = ReloadQueue(host: host, logger: logger)
    do {
      try loop.add(socket.fd) { [unowned self] _ in acceptClients() }
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

  /// The earliest client deadline, for the loop's timer.
  var nextDeadline: MonotonicInstant? {
    clients.values.flatMap { client -> [MonotonicInstant] in
      var deadlines = [client.requestDeadline, client.writeDeadline].compactMap { $0 }
      if case .waitReady(_, let deadline?, _) = client.pending { deadlines.append(deadline) }
      return deadlines
    }.min()
  }

  /// Re-checks every waiting request against the mounts' new state.
  func stateChanged() {
    reloads.stateChanged()
    for client in Array(clients.values) where !client.closed { evaluate(client) }
  }

  /// Drops clients past their deadlines and answers `wait-ready` requests that ran out of time.
  func timerFired(now: MonotonicInstant) {
    for client in Array(clients.values) where !client.closed {
      if let deadline = client.writeDeadline, deadline <= now {
        drop(client, reason: "it did not read its answers for \(formatDuration(Self.writeTimeout))")
      } else if let deadline = client.requestDeadline, deadline <= now {
        logger.notice("control client \(client.peer.description) sent no complete request; dropped")
        respond(
          client,
          .failure(
            .clientTimeout,
            "no complete request within \(formatDuration(Self.requestTimeout)); closing"),
          thenClose: true)
      } else if case .waitReady(let names, let deadline?, let timeout) = client.pending,
        deadline <= now
      {
        let waitingFor = names.filter { host.supervisorCore.machines[$0]?.isReady != true }
        let details = waitingFor.map { "\($0): \(host.supervisorCore.detail(of: $0))" }.joined(
          separator: "; ")
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
    for client in Array(clients.values) where !client.closed {
      guard case .follow(name) = client.pending else { continue }
      send(ControlResponse(lines: [line], more: true), to: client)
    }
    host.rearmTimer()
  }

  // MARK: Connections

  private func acceptClients() {
    while true {
      // Workers are spawned on this thread only, with every other descriptor closed, so setting
      // the flags after accept leaves no window for a leak.
      let fd = accept(socket.fd, nil, nil)
      if fd >= 0 {
        mountsup_set_nonblocking(fd)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
      }
      if fd < 0 {
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
        break
      }
      guard clients.count < Self.clientLimit, let peer = ControlPeer(fd: fd) else {
        let refusal = ControlProtocol.encodeLine(
          ControlResponse.failure(
            .tooManyClients, "too many control connections (\(Self.clientLimit)); try again"))
        _ = refusal.withUnsafeBytes {
          Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        Glibc.close(fd)
        continue
      }
      let client = Client(fd: fd, peer: peer, now: .now())
      do {
        try watch(client, writable: false)
      } catch {
        Glibc.close(fd)
        continue
      }
      clients[fd] = client
    }
    host.rearmTimer()
  }

  /// (Re-)registers the client with the loop: readable until its input ended, writable while
  /// answers wait. Hang-ups are always reported.
  private func watch(_ client: Client, writable: Bool) throws {
    loop.remove(client.fd)
    var events = writable ? EPOLLOUT.rawValue : 0
    if !client.inputEnded { events |= EventLoop.readable | EPOLLRDHUP.rawValue }
    try loop.add(client.fd, events: events) { [unowned self, unowned client] events in
      clientEvent(client, events)
    }
    client.watchingWritable = writable
  }

  private func clientEvent(_ client: Client, _ events: UInt32) {
    if events & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0 {
      // Both directions are gone: nobody is left to answer.
      drop(client, reason: nil)
    } else {
      if events & EPOLLOUT.rawValue != 0 { flush(client) }
      if !client.closed, events & (EventLoop.readable | EPOLLRDHUP.rawValue) != 0 {
        readInput(client)
      }
    }
    host.rearmTimer()
  }

  /// Reads what has arrived, a bounded amount per wake-up so that no client can monopolise the
  /// loop; level-triggered epoll calls again for the rest.
  private func readInput(_ client: Client) {
    var chunk = [UInt8](repeating: 0, count: 16384)
    for _ in 0..<8 where !client.closed {
      let count = read(client.fd, &chunk, chunk.count)
      if count > 0 {
        if client.closeWhenFlushed { continue }
        client.input += chunk.prefix(count)
        processInput(client)
        if client.input.count > ControlProtocol.maximumRequestLength {
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
        }
        continue
      }
      if count < 0, errno == EINTR { continue }
      if count < 0, errno == EAGAIN { return }
      guard count == 0 else {
        drop(client, reason: nil)
        return
      }
      // The client shut down its sending side (`socat`, `nc -N`): it still gets the answers
      // to what it sent, then the connection closes.
      client.inputEnded = true
      if !client.closeWhenFlushed, !client.input.isEmpty, client.input.last != UInt8(ascii: "\n") {
        client.input.append(UInt8(ascii: "\n"))
      }
      processInput(client)
      if !client.closed {
        do {
          try watch(client, writable: client.watchingWritable)
        } catch {
          drop(client, reason: "\(error)")
        }
      }
      return
    }
  }

  /// Handles complete request lines, one at a time: a line that waits holds back the next.
  private func processInput(_ client: Client) {
    guard !client.processing else { return }
    client.processing = true
    defer { client.processing = false }
    while !client.closed, !client.closeWhenFlushed, client.pending == nil,
      let newline = client.input.firstIndex(of: UInt8(ascii: "\n"))
    {
      let line = Array(client.input[..<newline])
      client.input.removeSubrange(...newline)
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
        handle(line, from: client)
      }
    }
    if client.inputEnded, client.pending == nil, client.output.count == client.sent {
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
    processInput(client)
  }

  /// Queues one response line (also a streamed one that does not end the request).
  func send(_ response: ControlResponse, to client: Client) {
    let line = ControlProtocol.encodeLine(response)
    guard client.output.count - client.sent + line.count <= Self.outputLimit else {
      drop(client, reason: "it did not read \(Self.outputLimit >> 20) MiB of answers")
      return
    }
    client.output += line
    flush(client)
  }

  private func flush(_ client: Client) {
    var progressed = false
    while !client.closed, client.sent < client.output.count {
      let count = client.output[client.sent...].withUnsafeBytes {
        Glibc.send(client.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
      }
      if count > 0 {
        client.sent += count
        progressed = true
      } else if count < 0, errno == EINTR {
        continue
      } else if count < 0, errno == EAGAIN {
        break
      } else {
        drop(client, reason: nil)
        return
      }
    }
    guard !client.closed else { return }
    if client.sent == client.output.count {
      client.output.removeAll()
      client.sent = 0
      client.writeDeadline = nil
      if client.closeWhenFlushed
        || (client.inputEnded && client.pending == nil && client.input.isEmpty)
      {
        drop(client, reason: nil)
        return
      }
      if client.watchingWritable { try? watch(client, writable: false) }
      return
    }
    if progressed || client.writeDeadline == nil {
      client.writeDeadline = .now() + Self.writeTimeout
    }
    if client.sent > 1 << 20 {
      client.output.removeFirst(client.sent)
      client.sent = 0
    }
    if !client.watchingWritable {
      do {
        try watch(client, writable: true)
      } catch {
        drop(client, reason: "\(error)")
      }
    }
  }

  private func drop(_ client: Client, reason: String?) {
    guard !client.closed else { return }
    if let reason { logger.notice("control client \(client.peer.description) dropped: \(reason)") }
    client.closed = true
    client.pending = nil
    loop.remove(client.fd)
    Glibc.close(client.fd)
    clients[client.fd] = nil
    if acceptPaused {
      acceptPaused = false
      try? loop.add(socket.fd) { [unowned self] _ in acceptClients() }
    }
  }
}
