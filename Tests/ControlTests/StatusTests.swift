import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

@Suite("mountctl status")
struct StatusTests {
  @Test("the table, names, exit codes 0/3/1/4")
  func tableAndExitCodes() async throws {
    try await withDaemon([TestMount(name: "alpha"), TestMount(name: "beta")]) { daemon in
      let ready = try await daemon.ctl("wait-ready", "--timeout", "20s")
      #expect(ready.status == 0, "\(ready)")

      let all = try await daemon.ctl("status")
      #expect(all.status == 0, "\(all)")
      let lines = all.output.split(separator: "\n")
      #expect(
        lines.first?.split(separator: " ", omittingEmptySubsequences: true) == [
          "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "MOUNTPOINT", "LAST", "ERROR",
        ])
      let alpha = try daemon.mount("alpha")
      #expect(
        lines.contains {
          $0.hasPrefix("alpha") && $0.contains("ready") && $0.contains("\(alpha.pid!)")
        })
      #expect(lines.contains { $0.hasPrefix("beta") && $0.contains(daemon.mountpoint("beta")) })
      #expect(!all.output.contains("\u{1B}["), "no colour when stdout is not a terminal")
      let terminal = try Spawned(
        [
          "/usr/bin/script", "-qec", "\(mountctl) status --socket \(daemon.socketPath)",
          "/dev/null",
        ],
        outputPath: daemon.directory + "/tty.out", errorPath: daemon.directory + "/tty.err",
        environment: ["TERM": "xterm", "NO_COLOR": nil])
      #expect(try await terminal.wait(timeout: .seconds(30)) == 0, "\(terminal.errors)")
      #expect(
        terminal.output.contains("\u{1B}[32mready"), "colour on a terminal: \(terminal.output)")
      #expect(kill(alpha.pid!, 0) == 0, "the pid shown is a live process")

      // Shell completion (argument-parser's protocol) offers the daemon's mount names.
      let completion = try daemon.spawnCtlRaw([
        "---completion", "status", "--", "positional@0", "4", "0", "mountctl", "status", "--socket",
        daemon.socketPath, "",
      ])
      #expect(try await completion.wait(timeout: .seconds(30)) == 0)
      #expect(completion.output == "alpha\nbeta\n")

      let one = try await daemon.ctl("status", "alpha")
      #expect(one.status == 0)
      #expect(one.output.split(separator: "\n").count == 2)

      let stopped = try await daemon.ctl("stop", "beta")
      #expect(stopped.status == 0, "\(stopped)")
      let some = try await daemon.ctl("status")
      #expect(some.status == 3, "\(some)")
      #expect(some.output.contains("stopped"))
      #expect(try await daemon.ctl("status", "alpha").status == 0)

      let unknown = try await daemon.ctl("status", "nosuch")
      #expect(unknown.status == 1)
      #expect(unknown.errors.contains("\"nosuch\"") && unknown.errors.contains("alpha, beta"))

      let missing = daemon.directory + "/nothing-here.sock"
      let unreachable = try await daemon.spawnCtlRaw(["status", "--socket", missing]).wait(
        timeout: .seconds(30))
      #expect(unreachable == 4)
    }
  }

  @Test("unreachable: the message names the socket that was tried")
  func unreachableNamesSocket() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let run = try await daemon.ctl("status")
    #expect(run.status == 4, "\(run)")
    #expect(run.errors.contains(daemon.socketPath))
    let start = try await daemon.ctl("start", "x")
    #expect(start.status == 4, "\(start)")
  }

  @Test("the JSON form has the documented keys and types")
  func jsonSchema() async throws {
    let mounts = [
      TestMount(name: "good", arguments: ["--status", "serving"]),
      TestMount(
        name: "broken", arguments: ["--fail", "backend unreachable"],
        settings: ["restart = \"never\"", "required = false"]),
    ]
    try await withDaemon(mounts) { daemon in
      try await waitFor("good ready and broken failed") {
        try daemon.status().mounts?.map(\.state) == ["failed", "ready"]
      }
      let run = try await daemon.ctl("status", "--json")
      #expect(run.status == 3, "broken is not ready: \(run)")
      let document = try #require(
        try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
      #expect(Set(document.keys) == ["version", "service", "mounts"])
      #expect(document["version"] as? Int == 1)

      let service = try #require(document["service"] as? [String: Any])
      #expect(
        Set(service.keys) == [
          "ready", "status", "reloading", "shutting_down", "config_files", "pid", "version",
          "started_at", "upgrades", "last_upgrade_at",
        ])
      #expect(service["ready"] as? Bool == true)
      #expect(service["reloading"] as? Bool == false)
      #expect(service["shutting_down"] as? Bool == false)
      #expect(service["config_files"] as? [String] == [daemon.configPath])
      #expect(service["pid"] as? Int == Int(daemon.process!.pid))
      #expect((service["status"] as? String)?.contains("1/2 mounts ready") == true)
      #expect(service["version"] as? String == MountSupervisorRelease.identity)
      #expect(
        (service["started_at"] as? Double).map { abs($0 - Date().timeIntervalSince1970) < 600 }
          == true)
      #expect(service["upgrades"] as? Int == 0 && service["last_upgrade_at"] is NSNull)

      let list = try #require(document["mounts"] as? [[String: Any]])
      #expect(list.map { $0["name"] as? String } == ["broken", "good"])
      let keys: Set<String> = [
        "name", "state", "detail", "pid", "uptime_seconds", "restarts", "mountpoint", "required",
        "stopped_by_operator", "last_error", "last_error_output", "worker_status", "hangs",
        "resumes", "last_resume_gap_ms", "holds_connection",
      ]
      for mount in list { #expect(Set(mount.keys) == keys, "every key is always present") }

      let good = list[1]
      #expect(good["state"] as? String == "ready")
      #expect(good["detail"] as? String == "ready")
      #expect((good["pid"] as? Int).map { $0 > 0 } == true)
      #expect((good["uptime_seconds"] as? Double).map { $0 >= 0 } == true)
      #expect(good["restarts"] as? Int == 0)
      #expect(good["mountpoint"] as? String == daemon.mountpoint("good"))
      #expect(good["required"] as? Bool == true)
      #expect(good["stopped_by_operator"] as? Bool == false)
      #expect(good["last_error"] is NSNull)
      #expect(good["last_error_output"] as? [String] == [])
      #expect(good["worker_status"] as? String == "serving")
      #expect(good["hangs"] as? Int == 0)

      let broken = list[0]
      #expect(broken["state"] as? String == "failed")
      #expect(broken["pid"] is NSNull)
      #expect(broken["uptime_seconds"] is NSNull)
      #expect(broken["required"] as? Bool == false)
      #expect((broken["last_error"] as? String)?.contains("backend unreachable") == true)
      #expect(
        (broken["last_error_output"] as? [String])?.contains { $0.contains("backend unreachable") }
          == true)
      #expect(broken["worker_status"] is NSNull)

      // The protocol's own status response carries the same objects.
      let response = try daemon.status()
      #expect(response.version == ControlProtocol.version && response.ok && response.error == nil)
      #expect(response.mounts?.map(\.name) == ["broken", "good"])
    }
  }

  @Test("--required judges only the required mounts: the readiness probe of a container")
  func requiredOnly() async throws {
    try await withDaemon([
      TestMount(name: "alpha"),
      TestMount(
        name: "broken", arguments: ["--fail", "no such bucket"],
        settings: ["required = false", "restart = \"never\""]),
    ]) { daemon in
      try await waitFor("broken failed") { try daemon.mount("broken").state == "failed" }
      #expect(try await daemon.ctl("wait-ready", "alpha", "--timeout", "20s").status == 0)
      let all = try await daemon.ctl("status")
      #expect(all.status == 3, "\(all)")
      let required = try await daemon.ctl("status", "--required")
      #expect(required.status == 0, "\(required)")
      #expect(required.output.contains("alpha") && !required.output.contains("broken"))
      let stopped = try await daemon.ctl("stop", "alpha")
      #expect(stopped.status == 0, "\(stopped)")
      #expect(try await daemon.ctl("status", "--required").status == 3)
    }
  }
}

@Suite("mountctl status: what the table tells")
struct StatusTableTests {
  @Test("a mount stopped by an operator says so, not its old last error")
  func stoppedByOperator() async throws {
    try await withDaemon([TestMount(name: "alpha"), TestMount(name: "beta")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let first = try daemon.mount("alpha")
      kill(first.pid!, SIGKILL)
      try await waitFor("alpha restarted after the SIGKILL") {
        let now = try daemon.mount("alpha")
        return now.isReady && now.pid != first.pid && now.lastError != nil
      }
      let killed = try #require(try daemon.mount("alpha").lastError)
      #expect(try await daemon.ctl("stop", "alpha").status == 0)

      let table = try await daemon.ctl("status")
      let row = try #require(table.output.split(separator: "\n").first { $0.hasPrefix("alpha ") })
      #expect(row.contains("stopped") && row.hasSuffix("stopped by operator"), "\(table)")
      #expect(!row.contains(killed), "\(table)")
      #expect(try daemon.mount("alpha").lastError == killed, "--json keeps the old error")
    }
  }

  @Test("an invalid reload is visible below the table until a reload succeeds")
  func failedReload() async throws {
    try await withDaemon([TestMount(name: "alpha")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      #expect(!(try await daemon.ctl("status").output.contains("reload")))
      try daemon.write([TestMount(name: "alpha", settings: ["restart_dleay = \"1s\""])])
      #expect(try await daemon.ctl("reload").status == 1)

      let table = try await daemon.ctl("status")
      #expect(table.status == 0, "the mounts are fine: \(table)")
      let lines = table.output.split(separator: "\n")
      #expect(lines.first?.hasPrefix("NAME") == true)
      let note = try #require(lines.last, "\(table)")
      #expect(note.hasPrefix("last reload failed, nothing changed: "), "\(table)")
      #expect(note.contains(daemon.configPath) && note.contains("restart_dleay"), "\(table)")

      try daemon.write([TestMount(name: "alpha")])
      #expect(try await daemon.ctl("reload").status == 0)
      #expect(!(try await daemon.ctl("status").output.contains("reload failed")))
    }
  }
}

extension TestDaemon {
  /// `mountctl ARGS` without the daemon's `--socket`.
  func spawnCtlRaw(_ arguments: [String]) throws -> Spawned {
    try Spawned(
      [mountctl] + arguments, outputPath: directory + "/raw.out", errorPath: directory + "/raw.err")
  }
}
