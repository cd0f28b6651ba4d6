import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

/// One sample as the real `prometheus_client` parser (PyPI, installed by scripts/setup.sh)
/// reads it.
struct MetricSample: Decodable {
  var family: String
  var type: String
  var name: String
  var labels: [String: String]
  var value: Double
}

/// The samples of an exposition parsed by `prometheus_client`: from a file, or fetched from an
/// http:// URL (then the answer's Content-Type is checked too).
func parsedMetrics(_ source: String, in daemon: TestDaemon) async throws -> [MetricSample] {
  let script = """
    import json, sys, urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    source = sys.argv[1]
    if source.startswith("http://"):
        with urllib.request.urlopen(source, timeout=10) as answer:
            kind = answer.headers.get("Content-Type", "")
            if not kind.startswith("text/plain; version=0.0.4"):
                sys.exit("unexpected Content-Type: " + kind)
            text = answer.read().decode()
    else:
        text = open(source).read()
    samples = [
        {"family": f.name, "type": f.type, "name": s.name, "labels": s.labels, "value": s.value}
        for f in text_string_to_metric_families(text) for s in f.samples
    ]
    print(json.dumps(samples))
    """
  let output = "\(daemon.directory)/parsed-\(UInt32.random(in: 0...UInt32.max))"
  let parser = try Spawned(
    ["/usr/bin/env", "python3", "-c", script, source], outputPath: output + ".out",
    errorPath: output + ".err")
  let status = try await parser.wait(timeout: .seconds(60))
  guard status == 0 else {
    throw TestFailure(
      "prometheus_client could not parse \(source) (run scripts/setup.sh to install it): "
        + parser.errors)
  }
  return try JSONDecoder().decode([MetricSample].self, from: Data(parser.output.utf8))
}

extension [MetricSample] {
  /// The value of the sample with this name and exactly these labels.
  func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
    first { $0.name == name && $0.labels == labels }?.value
  }
}

/// A TCP port on the loopback that nothing listens on right now.
func freeLoopbackPort() throws -> UInt16 {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
  var length = socklen_t(MemoryLayout<sockaddr_in>.size)
  let found = withUnsafeMutablePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
    }
  }
  guard found else {
    throw TestFailure("no free loopback port: \(String(cString: strerror(errno)))")
  }
  return UInt16(bigEndian: address.sin_port)
}

/// The HTTP status line of a request sent raw to the metrics listener.
func httpStatusLine(port: UInt16, request: String) throws -> String {
  let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
  defer { close(fd) }
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = port.bigEndian
  address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
  var timeout = timeval(tv_sec: 10, tv_usec: 0)
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
  let connected = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
      connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
    }
  }
  guard connected else { throw TestFailure("cannot connect to 127.0.0.1:\(port)") }
  _ = Array(request.utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
  var answer: [UInt8] = []
  var buffer = [UInt8](repeating: 0, count: 4096)
  while true {
    let count = recv(fd, &buffer, buffer.count, 0)
    guard count > 0 else { break }
    answer += buffer.prefix(count)
  }
  return String(decoding: answer, as: UTF8.self).split(separator: "\r\n").first.map(String.init)
    ?? ""
}

/// A TCP connection to the metrics listener that never sends a request.
final class IdleConnection {
  let fd: Int32

  init(port: UInt16) throws {
    fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
    guard connected else {
      Glibc.close(fd)
      throw TestFailure("cannot connect to 127.0.0.1:\(port)")
    }
  }

  /// The listener closed it: reading gives end of file (or a reset) at once.
  var wasClosedByPeer: Bool {
    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    guard poll(&poller, 1, 0) > 0 else { return false }
    var byte: UInt8 = 0
    return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0
  }

  func close() { Glibc.close(fd) }
}

@Suite("metrics: mountctl metrics, metrics_file, metrics_listen; watch_config")
struct MetricsTests {
  @Test(
    "one exposition three ways, valid for prometheus_client, following the mounts' state")
  func threeWays() async throws {
    let port = try freeLoopbackPort()
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let metricsDirectory = daemon.directory + "/textfile"
    mkdir(metricsDirectory, 0o755)
    let file = metricsDirectory + "/mountsup.prom"
    try daemon.write(
      [
        TestMount(name: "alpha"),
        TestMount(
          name: "broken", arguments: ["--fail", "no such bucket"],
          settings: ["required = false", "restart = \"never\""]),
      ],
      supervisor: [
        "metrics_file = \"\(file)\"", "metrics_listen = \"127.0.0.1:\(port)\"",
      ])
    try await daemon.start()
    try await waitFor("alpha ready and broken failed") {
      let mounts = try daemon.status().mounts ?? []
      return mounts.map(\.state) == ["ready", "failed"]
    }

    let printed = try await daemon.ctl("metrics")
    #expect(printed.status == 0, "\(printed)")
    let printedPath = daemon.directory + "/printed.prom"
    try printed.output.write(toFile: printedPath, atomically: false, encoding: .utf8)
    let fromCtl = try await parsedMetrics(printedPath, in: daemon)
    let alpha = ["mount": "alpha"]
    let broken = ["mount": "broken"]
    #expect(fromCtl.value("mountsup_mount_up", alpha) == 1)
    #expect(fromCtl.value("mountsup_mount_up", broken) == 0)
    #expect(fromCtl.value("mountsup_mount_state", ["mount": "broken", "state": "failed"]) == 1)
    #expect(fromCtl.value("mountsup_mount_state", ["mount": "alpha", "state": "failed"]) == 0)
    #expect(
      fromCtl.value("mountsup_mount_failures_total", ["mount": "broken", "kind": "exit"]) == 1)
    #expect(
      fromCtl.value("mountsup_mount_failures_total", ["mount": "alpha", "kind": "signal"]) == 0)
    #expect(fromCtl.value("mountsup_mount_restarts_total", alpha) == 0)
    #expect(fromCtl.value("mountsup_ready") == 1)
    #expect(fromCtl.value("mountsup_reloads_total", ["result": "applied"]) == 0)
    #expect(
      fromCtl.value(
        "mountsup_build_info",
        [
          "version": MountSupervisorRelease.version, "commit": MountSupervisorRelease.commit,
          "control_protocol": "1",
        ]) == 1)
    #expect(fromCtl.value("mountsup_upgrades_total") == 0)
    #expect(
      fromCtl.value("mountsup_mount_failures_total", ["mount": "alpha", "kind": "hang"]) == 0)
    #expect(fromCtl.first { $0.family == "mountsup_mount_restarts" }?.type == "counter")
    let toReady = try #require(fromCtl.value("mountsup_mount_time_to_ready_seconds", alpha))
    #expect(toReady > 0 && toReady < 20)
    #expect(fromCtl.value("mountsup_mount_time_to_ready_seconds", broken) == nil)
    let since = try #require(fromCtl.value("mountsup_mount_ready_since_timestamp_seconds", alpha))
    #expect(abs(since - Date().timeIntervalSince1970) < 120)
    #expect(
      fromCtl.value(
        "mountsup_mount_info",
        ["mount": "alpha", "mountpoint": daemon.mountpoint("alpha"), "required": "true"]) == 1)

    // The listener and the file serve the same metrics.
    let fromHTTP = try await parsedMetrics("http://127.0.0.1:\(port)/metrics", in: daemon)
    #expect(Set(fromHTTP.map(\.name)) == Set(fromCtl.map(\.name)))
    #expect(fromHTTP.value("mountsup_mount_up", alpha) == 1)
    #expect(try httpStatusLine(port: port, request: "GET /other HTTP/1.1\r\n\r\n").contains("404"))
    #expect(
      try httpStatusLine(port: port, request: "POST /metrics HTTP/1.1\r\n\r\n").contains("405"))
    // The file follows within a second (it is rewritten at most once a second).
    try await waitFor("the metrics file to show broken failed") {
      let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
      return text.contains(#"mountsup_mount_state{mount="broken",state="failed"} 1"#)
    }
    let fromFile = try await parsedMetrics(file, in: daemon)
    #expect(fromFile.value("mountsup_mount_up", alpha) == 1)
    #expect(
      fromFile.value("mountsup_mount_failures_total", ["mount": "broken", "kind": "exit"]) == 1)
    // Clients that connect and say nothing cost a slot each, never the loop: beyond the limit the
    // oldest is closed, and scrapes and supervision go on.
    let idle = try (0..<40).map { _ in try IdleConnection(port: port) }
    defer { for connection in idle { connection.close() } }
    let whileIdle = try await parsedMetrics("http://127.0.0.1:\(port)/metrics", in: daemon)
    #expect(whileIdle.value("mountsup_mount_up", alpha) == 1)
    #expect(try await daemon.ctl("status", "alpha").status == 0)
    try await waitFor("the oldest idle clients closed by the listener") {
      idle.filter(\.wasClosedByPeer).count >= 40 - 16
    }

    // Reading the metrics changes nothing, so the file is not rewritten (same inode).
    var before = stat()
    stat(file, &before)
    _ = try await parsedMetrics("http://127.0.0.1:\(port)/metrics", in: daemon)
    #expect(try await daemon.ctl("metrics").status == 0)
    var after = stat()
    stat(file, &after)
    #expect(before.st_ino == after.st_ino, "the metrics file was rewritten though nothing changed")

    // A worker killed: a signal failure and a restart, in the file once it is rewritten.
    let pid = try #require(try daemon.mount("alpha").pid)
    kill(pid, SIGKILL)
    try await waitFor("alpha restarted, ready again, in the metrics file") {
      guard try daemon.mount("alpha").isReady, try daemon.mount("alpha").restarts == 1 else {
        return false
      }
      let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
      return text.contains(#"mountsup_mount_restarts_total{mount="alpha"} 1"#)
        && text.contains(#"mountsup_mount_up{mount="alpha"} 1"#)
    }
    let afterKill = try await parsedMetrics(file, in: daemon)
    #expect(
      afterKill.value("mountsup_mount_failures_total", ["mount": "alpha", "kind": "signal"]) == 1)
    #expect(afterKill.value("mountsup_mount_restarts_total", alpha) == 1)
  }

  @Test("an address already in use stops the start, naming it; nothing is started")
  func addressInUse() async throws {
    let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(taken) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(taken, $0, length) == 0 && listen(taken, 1) == 0
          && getsockname(taken, $0, &length) == 0
      }
    }
    try #require(bound)
    let port = UInt16(bigEndian: address.sin_port)
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write(
      [TestMount(name: "alpha")], supervisor: ["metrics_listen = \"127.0.0.1:\(port)\""])
    let process = try Daemon(config: daemon.configPath, sandbox: daemon.sandbox)
    defer { process.stop() }
    #expect(process.exitCode() == 1, "\(process.log)")
    #expect(process.log.contains("metrics_listen 127.0.0.1:\(port)"), "\(process.log)")
    #expect(process.log.contains("Address already in use") || process.log.contains("EADDRINUSE"))
    #expect(fuseMount(at: daemon.mountpoint("alpha")) == nil)
    #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
  }

  @Test(
    "watch_config: an editor's save (rename away, write anew) is one reload that changes nothing")
  func editorSave() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write(
      [TestMount(name: "alpha")],
      supervisor: ["include = [\"mounts.d/*.toml\"]", "watch_config = true"])
    let dropIns = daemon.directory + "/mounts.d"
    mkdir(dropIns, 0o755)
    let dropIn = dropIns + "/beta.toml"
    let section = mountSection("beta", at: daemon.mountpoint("beta"))
    try section.write(toFile: dropIn, atomically: false, encoding: .utf8)
    try await daemon.start()
    #expect(try await daemon.ctl("wait-ready", "--timeout", "20s").status == 0)
    let beta = try daemon.mount("beta").pid

    // As vim saves: the old file renamed to a backup, then the new one written.
    rename(dropIn, dropIn + "~")
    try section.write(toFile: dropIn, atomically: false, encoding: .utf8)
    let path = daemon.directory + "/after-save.prom"
    try await waitFor("the reload after the save\n\(daemon.log)") {
      let metrics =
        try ControlClient(socketPath: daemon.socketPath).request(
          ControlRequest(.metrics), timeout: .seconds(5)
        ).metrics ?? ""
      try metrics.write(toFile: path, atomically: false, encoding: .utf8)
      return metrics.contains(#"mountsup_reloads_total{result="applied"} 1"#)
    }
    let samples = try await parsedMetrics(path, in: daemon)
    #expect(samples.value("mountsup_reloads_total", ["result": "failed"]) == 0)
    #expect(try daemon.mount("beta").pid == beta, "the saved drop-in's mount was not touched")
    #expect(daemon.log.contains("added none; removed none; changed none; 2 unchanged"))

    // A drop-in in an include directory that held none at start is seen too.
    let others = daemon.directory + "/more.d"
    mkdir(others, 0o755)
    try daemon.write(
      [TestMount(name: "alpha")],
      supervisor: [
        "include = [\"mounts.d/*.toml\", \"more.d/*.toml\"]", "watch_config = true",
      ])
    try await waitFor("the watched reload of the new main file\n\(daemon.log)") {
      let metrics =
        try ControlClient(socketPath: daemon.socketPath).request(
          ControlRequest(.metrics), timeout: .seconds(5)
        ).metrics ?? ""
      return metrics.contains(#"mountsup_reloads_total{result="applied"} 2"#)
    }
    try mountSection("gamma", at: daemon.mountpoint("gamma"))
      .write(toFile: others + "/gamma.toml", atomically: false, encoding: .utf8)
    try await waitFor("gamma added by the watched reload\n\(daemon.log)") {
      try daemon.status().mounts?.first { $0.name == "gamma" }?.isReady == true
    }
  }

  @Test("watch_config: a ConfigMap's swap of ..data is a reload, counted in the metrics")
  func configMapSwap() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write([TestMount(name: "alpha")], supervisor: ["watch_config = true"])
    // The layout of a ConfigMap volume: mounts.toml -> ..data/mounts.toml, ..data -> ..v1.
    let directory = daemon.directory
    let first = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
    mkdir("\(directory)/..v1", 0o755)
    try first.write(toFile: "\(directory)/..v1/mounts.toml", atomically: false, encoding: .utf8)
    symlink("..v1", "\(directory)/..data")
    unlink(daemon.configPath)
    symlink("..data/mounts.toml", daemon.configPath)
    try await daemon.start()
    #expect(try await daemon.ctl("wait-ready", "alpha", "--timeout", "20s").status == 0)

    // The update as the kubelet makes it: a new directory, a new symlink renamed over ..data.
    let second = first + "\n" + mountSection("beta", at: daemon.mountpoint("beta"))
    mkdir("\(directory)/..v2", 0o755)
    try second.write(toFile: "\(directory)/..v2/mounts.toml", atomically: false, encoding: .utf8)
    symlink("..v2", "\(directory)/..data_tmp")
    rename("\(directory)/..data_tmp", "\(directory)/..data")
    try await waitFor("beta added by the watched reload\n\(daemon.log)") {
      try daemon.status().mounts?.first { $0.name == "beta" }?.isReady == true
    }
    let alphaPid = try daemon.mount("alpha").pid
    let metrics = try await daemon.ctl("metrics")
    let path = directory + "/after-reload.prom"
    try metrics.output.write(toFile: path, atomically: false, encoding: .utf8)
    let samples = try await parsedMetrics(path, in: daemon)
    #expect(samples.value("mountsup_reloads_total", ["result": "applied"]) == 1)
    #expect(samples.value("mountsup_mount_up", ["mount": "beta"]) == 1)
    #expect(try daemon.mount("alpha").pid == alphaPid, "an unchanged mount is left alone")
  }
}
