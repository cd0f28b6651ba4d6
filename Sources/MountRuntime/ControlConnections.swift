import CLinuxSupport
import Glibc
import MountControl
import MountCore

/// The connections of the control socket: accepting, reading requests a bounded amount per
/// turn, pacing a client by its unread answers, writing answers and `logs` pieces, dropping.
extension ControlServer {

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
  func events(for client: Client) -> UInt32 {
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
  func pace(_ client: Client) {
    let paused = client.input.count >= Self.inputBacklogLimit
    guard paused != client.readingPaused, !client.closed else { return }
    client.readingPaused = paused
    do {
      try loop.change(client.fd, events: events(for: client))
    } catch {
      drop(client, reason: "\(error)")
    }
  }

  func watch(_ client: Client, writable: Bool) {
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
  func readInput(_ client: Client) {
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
  func processInput(_ client: Client) {
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

  func flush(_ client: Client) {
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
  func sendLogPiece(_ client: Client) {
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

  func drop(_ client: Client, reason: String?) {
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
