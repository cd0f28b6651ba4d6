import CLinuxSupport
import Glibc
import Logging
import MountConfig

/// `[supervisor] metrics_listen`: the metrics over HTTP (`GET /metrics`), served by the
/// supervisor's own loop.
///
/// Supervision never waits for a scraper: every socket is non-blocking, a client's event costs
/// one `recv` of at most ``requestLimit`` bytes or one `send`, and the loop reads these sockets
/// after supervision in each turn. A request is answered once, then the connection closes
/// (HTTP/1.0 style, `Connection: close`). At most ``clientLimit`` connections are kept; a new
/// one beyond that closes the oldest, so a client that connects and says nothing costs a slot,
/// never a timer or a wake-up.
final class MetricsListener {
  static let clientLimit = 16
  /// The request line and headers must fit in this; a scraper's take a few hundred bytes.
  static let requestLimit = 8 * 1024

  final class Client {
    let id: Int
    let fd: Descriptor
    var input: [UInt8] = []
    var output: [UInt8] = []
    var sent = 0
    var answered = false
    var watchingWritable = false

    init(id: Int, fd: Descriptor) {
      self.id = id
      self.fd = fd
    }
  }

  let fd: Descriptor
  private let loop: EventLoop
  private let logger: Logger
  private let exposition: () -> [UInt8]
  private var clients: [Int: Client] = [:]
  private var nextID = 1

  /// Binds and listens; the error names the address and what to do.
  init(
    address: ListenAddress, loop: EventLoop, logger: Logger,
    exposition: @escaping () -> [UInt8]
  ) throws(RuntimeError) {
    self.loop = loop
    self.logger = logger
    self.exposition = exposition
    let what = "metrics_listen \(address)"
    let family = address.isIPv6 ? AF_INET6 : AF_INET
    fd = Descriptor(
      try system(.metrics, "\(what): socket") {
        socket(
          family,
          Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            | Int32(SOCK_NONBLOCK.rawValue), 0)
      })
    var one: Int32 = 1
    setsockopt(fd.raw, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let bound: Int32
    if address.isIPv6 {
      var socketAddress = sockaddr_in6()
      socketAddress.sin6_family = sa_family_t(AF_INET6)
      socketAddress.sin6_port = address.port.bigEndian
      inet_pton(AF_INET6, address.host, &socketAddress.sin6_addr)
      bound = withUnsafePointer(to: &socketAddress) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          bind(fd.raw, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
      }
    } else {
      var socketAddress = sockaddr_in()
      socketAddress.sin_family = sa_family_t(AF_INET)
      socketAddress.sin_port = address.port.bigEndian
      inet_pton(AF_INET, address.host, &socketAddress.sin_addr)
      bound = withUnsafePointer(to: &socketAddress) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
          bind(fd.raw, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
      }
    }
    if bound != 0 {
      throw RuntimeError(
        .metrics,
        "\(what): bind (is another program, or another mountsupd, listening there? change "
          + "[supervisor] metrics_listen)", errno: errno)
    }
    try system(.metrics, "\(what): listen") { listen(fd.raw, 64) }
    try loop.add(fd, as: .metricsListener)
    logger.info("metrics on http://\(address)/metrics")
  }

  /// Closes every connection and the listening socket.
  func close() {
    for client in Array(clients.values) { drop(client) }
    loop.remove(fd)
  }

  func acceptClients() {
    // Bounded by the backlog of the listening socket: the loop reports it again if more wait.
    for _ in 0..<Self.clientLimit {
      // Workers are spawned on this thread only, with every other descriptor closed, so setting
      // the flags after accept leaves no window for a leak.
      let raw = accept(fd.raw, nil, nil)
      guard raw >= 0 else {
        if errno == EINTR || errno == ECONNABORTED { continue }
        return
      }
      let client = Client(id: nextID, fd: Descriptor(raw))
      _ = fcntl(raw, F_SETFD, FD_CLOEXEC)
      guard (try? client.fd.setNonBlocking()) != nil else { continue }
      nextID += 1
      if clients.count >= Self.clientLimit, let oldest = clients.keys.min() {
        drop(clients[oldest]!)
      }
      guard (try? loop.add(client.fd, as: .metricsClient(client.id))) != nil else { continue }
      clients[client.id] = client
    }
  }

  func clientEvent(_ id: Int) {
    guard let client = clients[id] else { return }
    if client.answered {
      flush(client)
      return
    }
    var buffer = [UInt8](repeating: 0, count: Self.requestLimit - client.input.count)
    let received: Int?
    do {
      received = try buffer.withUnsafeMutableBytes { (raw) throws(RuntimeError) in
        try client.fd.read(into: raw)
      }
    } catch {
      drop(client)
      return
    }
    guard let received else { return }
    guard received > 0 else {
      drop(client)
      return
    }
    client.input += buffer.prefix(received)
    guard let head = requestHead(client.input) else {
      if client.input.count >= Self.requestLimit {
        answer(client, status: "431 Request Header Fields Too Large", body: "request too long\n")
      }
      return
    }
    let words = head.split(separator: " ")
    let method = words.first.map(String.init) ?? ""
    let target = words.count > 1 ? String(words[1]) : ""
    let path = target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
    guard method == "GET" || method == "HEAD" else {
      answer(client, status: "405 Method Not Allowed", body: "only GET /metrics\n")
      return
    }
    guard path == "/metrics" else {
      answer(client, status: "404 Not Found", body: "the metrics are at /metrics\n")
      return
    }
    answer(
      client, status: "200 OK", body: exposition(), headOnly: method == "HEAD",
      contentType: "text/plain; version=0.0.4; charset=utf-8")
  }

  /// The request line, once the whole head (request line and headers) has arrived.
  private func requestHead(_ input: [UInt8]) -> String? {
    let text = String(decoding: input, as: UTF8.self)
    guard text.contains("\r\n\r\n") || text.contains("\n\n") else { return nil }
    return text.split(whereSeparator: \.isNewline).first.map(String.init)
  }

  private func answer(
    _ client: Client, status: String, body: String, headOnly: Bool = false
  ) {
    answer(
      client, status: status, body: Array(body.utf8), headOnly: headOnly,
      contentType: "text/plain; charset=utf-8")
  }

  private func answer(
    _ client: Client, status: String, body: [UInt8], headOnly: Bool, contentType: String
  ) {
    let head =
      "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
      + "Connection: close\r\n\r\n"
    client.output = Array(head.utf8) + (headOnly ? [] : body)
    client.input = []
    client.answered = true
    flush(client)
  }

  /// One `send` of what is left; watches for room while some is, closes when all is out.
  private func flush(_ client: Client) {
    do {
      let sent = try client.output[client.sent...].withUnsafeBytes {
        (raw) throws(RuntimeError) in try client.fd.send(raw)
      }
      client.sent += sent ?? 0
    } catch {
      drop(client)
      return
    }
    if client.sent == client.output.count {
      shutdown(client.fd.raw, Int32(SHUT_WR))
      drop(client)
    } else if !client.watchingWritable {
      client.watchingWritable = true
      try? loop.change(client.fd, events: EventLoop.writable)
    }
  }

  private func drop(_ client: Client) {
    loop.remove(client.fd)
    clients[client.id] = nil
  }
}
