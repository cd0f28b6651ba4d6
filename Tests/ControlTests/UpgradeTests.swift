import Foundation
import Glibc
import MountControl
import MountSupTestSupport
import Testing

/// A copy of mountsupd whose embedded commit reads differently: another build, as far as an
/// upgrade and `--version` can tell. Returns its path and its identity.
func otherBuild(in directory: String) throws -> (path: String, identity: String) {
  let commit = MountSupervisorRelease.commit
  let hash = Array(commit.prefix(12).utf8)
  guard hash.count == 12, commit != "unknown" else {
    throw TestFailure("this build has no git commit to tell two builds apart (\(commit))")
  }
  var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: daemonBinary)))
  let replacement = Array("feedfacecafe".utf8)
  var found = 0
  var index = 0
  while index + hash.count <= bytes.count {
    if bytes[index] == hash[0], bytes[index..<(index + hash.count)].elementsEqual(hash) {
      bytes.replaceSubrange(index..<(index + hash.count), with: replacement)
      found += 1
      index += hash.count
    } else {
      index += 1
    }
  }
  guard found > 0 else { throw TestFailure("the commit \(commit) is not in \(daemonBinary)") }
  let path = directory + "/mountsupd-other"
  try Data(bytes).write(to: URL(fileURLWithPath: path))
  chmod(path, 0o755)
  let identity = MountSupervisorRelease.identity.replacingOccurrences(
    of: String(commit.prefix(12)), with: "feedfacecafe")
  return (path, identity)
}

/// The mount IDs of the FUSE mounts at these mountpoints.
func mountIDs(_ mountpoints: [String]) -> [String: Int] {
  let wanted = Set(mountpoints)
  var found: [String: Int] = [:]
  for entry in mountTable() where entry.isFUSE && wanted.contains(entry.mountpoint) {
    found[entry.mountpoint] = entry.id
  }
  return found
}

/// What each of a process's descriptors is, for a message.
func openDescriptors(of pid: Int32) -> [String] {
  let directory = "/proc/\(pid)/fd"
  let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
  return names.sorted { Int($0) ?? 0 < Int($1) ?? 0 }.map { name in
    let target =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(name)")) ?? "?"
    return "\(name)=\(target)"
  }
}

/// Whether the process sleeps with a socket open: a `mountctl` waiting for its answer.
func isWaitingForAnAnswer(_ pid: Int32) -> Bool {
  let directory = "/proc/\(pid)/fd"
  let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
  let hasSocket = descriptors.contains {
    ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)")) ?? "")
      .hasPrefix("socket:")
  }
  let state = (readFile("/proc/\(pid)/stat") ?? "").split(separator: ")").last?.split(
    separator: " "
  )
  .first
  return hasSocket && state == "S"
}

/// The daemon's resident memory in KiB.
func residentKiB(of pid: Int32) -> Int {
  let status = readFile("/proc/\(pid)/status") ?? ""
  let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
  return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

@Suite("mountctl upgrade: a new binary in place, no mount touched")
struct UpgradeTests {
  @Test("20 upgrades between two builds: same workers and mount IDs, readers never fail")
  func upgradesKeepEverything() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let base = daemon.directory
    let hasBindfs = FileManager.default.isExecutableFile(atPath: "/usr/bin/bindfs")
    var sections: [String] = []
    var files: [String] = []
    for index in 1...10 {
      let source = "\(base)/source-\(index)"
      try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
      try "data \(index)\n".write(toFile: source + "/data", atomically: true, encoding: .utf8)
      let mirror = "\(base)/mnt/mirror-\(index)"
      sections.append(
        mountSection(
          "mirror-\(index)", at: mirror,
          command: [binDirectory + "/mountsup-mirror", source, "{mountpoint}"]))
      files.append(mirror + "/data")
      let worker = "\(base)/mnt/worker-\(index)"
      sections.append(mountSection("worker-\(index)", at: worker))
      files.append(worker + "/hello")
      let bind = "\(base)/mnt/bind-\(index)"
      sections.append(
        hasBindfs
          ? mountSection(
            "bind-\(index)", at: bind, command: ["bindfs", "-f", source, "{mountpoint}"],
            ["readiness": "\"probe\""])
          : mountSection("bind-\(index)", at: bind))
      files.append(bind + (hasBindfs ? "/data" : "/hello"))
    }
    try daemon.write(sections: sections)
    let notify = try NotifyReceiver(in: daemon.sandbox)
    try await daemon.start(notify: notify)
    #expect(try await daemon.ctl("wait-ready", "--timeout", "60s").status == 0)
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    let pid = try #require(daemon.process?.pid)
    let other = try otherBuild(in: base)

    // A reader per mount, reading its file in a loop; every failed read is written down.
    let errors = base + "/read-errors"
    let accesses = Accesses(in: base)
    defer { accesses.finish() }
    for file in files {
      try accesses.start([
        "/bin/sh", "-c",
        "while :; do cat \"$0\" > /dev/null || echo \"$0\" >> \"$1\"; sleep 0.02; done", file,
        errors,
      ])
    }
    let mountpoints = files.map { ($0 as NSString).deletingLastPathComponent }
    let before = try daemon.status()
    let workersBefore = Dictionary(
      uniqueKeysWithValues: (before.mounts ?? []).map { ($0.name, $0.pid) })
    let idsBefore = mountIDs(mountpoints)
    #expect(idsBefore.count == 30)
    // Counted after the first upgrade: the old binary had descriptors of its own making (the
    // hang check's, probes') that the new one makes again.
    var descriptorsBefore = 0
    var memoryBefore = 0

    for round in 1...20 {
      // Back without --binary: the default is the file the daemon was first started from.
      let (arguments, identity) =
        round.isMultiple(of: 2)
        ? (["upgrade"], MountSupervisorRelease.identity)
        : (["upgrade", "--binary", other.path], other.identity)
      let upgrade = try await daemon.ctl(arguments)
      #expect(upgrade.status == 0, "round \(round): \(upgrade)\n\(daemon.log)")
      #expect(upgrade.output.contains("to \(identity) in "), "\(upgrade)")
      #expect(upgrade.output.hasSuffix("; 30 mounts kept\n"), "\(upgrade)")
      let service = try #require(try daemon.status().service)
      #expect(service.version == identity && service.upgrades == round && service.pid == pid)
      if round == 1 {
        descriptorsBefore = DaemonResources(of: pid).descriptors
        memoryBefore = residentKiB(of: pid)
      }
    }

    let after = try daemon.status()
    #expect(after.mounts?.allSatisfy(\.isReady) == true)
    let workersAfter = Dictionary(
      uniqueKeysWithValues: (after.mounts ?? []).map { ($0.name, $0.pid) })
    #expect(workersAfter == workersBefore, "the same worker of every mount")
    #expect(mountIDs(mountpoints) == idsBefore, "the same mount at every mountpoint")
    #expect(after.mounts?.allSatisfy { $0.restarts == 0 } == true)
    #expect(readFile(errors) == nil, "failed reads: \(readFile(errors) ?? "")")
    let resources = DaemonResources(of: pid)
    #expect(
      resources.descriptors <= descriptorsBefore && resources.zombies == 0,
      "\(resources), \(descriptorsBefore) descriptors after the first upgrade: \(openDescriptors(of: pid))"
    )
    #expect(residentKiB(of: pid) < memoryBefore + 8 * 1024, "\(memoryBefore) KiB after the first")
    notify.drain()
    #expect(notify.count("READY=1") == 1, "READY once, not again after an upgrade")
    let metrics = try await daemon.ctl("metrics").output.split(separator: "\n")
    #expect(
      metrics.contains("mountsup_upgrades_total 20"), "\(metrics.filter { $0.contains("upgrade") })"
    )
    #expect(
      daemon.log.contains(
        "upgraded from \(other.identity) to \(MountSupervisorRelease.identity) in "))
  }

  @Test("a missing, non-executable, failing or refusing binary changes nothing")
  func refusedUpgrades() async throws {
    try await withDaemon([TestMount(name: "alpha")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let before = try daemon.mount("alpha")
      let base = daemon.directory
      try "#!/bin/sh\nexit 1\n".write(toFile: base + "/fails", atomically: true, encoding: .utf8)
      try "#!/bin/sh\necho \"cannot take over state format $2\" >&2; exit 1\n".write(
        toFile: base + "/refuses", atomically: true, encoding: .utf8)
      try "not a program\n".write(toFile: base + "/plain", atomically: true, encoding: .utf8)
      chmod(base + "/fails", 0o755)
      chmod(base + "/refuses", 0o755)
      let cases = [
        (base + "/missing", "No such file or directory"),
        (base + "/plain", "is not an executable file"),
        (base + "/fails", "--can-resume 2 exited with status 1"),
        (base + "/refuses", "cannot take over state format 2"),
      ]
      for (binary, words) in cases {
        let refused = try await daemon.ctl("upgrade", "--binary", binary)
        #expect(refused.status == 1, "\(binary): \(refused)")
        #expect(refused.errors.contains(words) && refused.errors.contains("nothing changed"))
        let now = try daemon.mount("alpha")
        #expect(now.isReady && now.pid == before.pid)
      }
      // It says yes, then removes itself: the exec fails, and the daemon goes on as it was.
      let vanishing = base + "/vanishing"
      try "#!/bin/sh\nrm -f \"$0\"\necho '9.9.9 (commit vanishing)'\n".write(
        toFile: vanishing, atomically: true, encoding: .utf8)
      chmod(vanishing, 0o755)
      let failedExec = try await daemon.ctl("upgrade", "--binary", vanishing)
      #expect(failedExec.status == 1, "\(failedExec)")
      #expect(
        failedExec.errors.contains("exec of \(vanishing) failed: No such file or directory")
          && failedExec.errors.contains("this binary goes on"), "\(failedExec)")
      let still = try daemon.mount("alpha")
      #expect(still.isReady && still.pid == before.pid)
      #expect(try daemon.status().service?.upgrades == 0)
      #expect(
        try await daemon.ctl("upgrade", "--binary", base + "/missing", asNobody: true).status == 77)
    }
  }

  @Test("a held FUSE connection crosses the upgrade: a crash after it is still resumed")
  func heldConnectionCrossesTheUpgrade() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    let source = daemon.directory + "/source"
    try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
    try "kept\n".write(toFile: source + "/data", atomically: true, encoding: .utf8)
    try daemon.write(sections: [
      mountSection(
        "mirror", at: daemon.mountpoint("mirror"),
        command: [binDirectory + "/mountsup-mirror", source, "{mountpoint}"],
        ["restart_delay": "\"0s\""])
    ])
    try await daemon.start()
    #expect(try await daemon.ctl("wait-ready").status == 0)
    try await waitFor("the connection held") { try daemon.mount("mirror").holdsConnection }
    let before = try daemon.mount("mirror")
    let mountID = try #require(fuseMount(at: daemon.mountpoint("mirror"))?.id)
    // A file kept open across the upgrade and the crash.
    let held = try FileHandle(
      forReadingFrom: URL(fileURLWithPath: daemon.mountpoint("mirror") + "/data"))
    defer { try? held.close() }

    #expect(try await daemon.ctl("upgrade").status == 0)
    #expect(try daemon.mount("mirror").holdsConnection, "still held by the new binary")
    kill(before.pid!, SIGKILL)
    try await waitFor("the crash resumed") {
      let now = try daemon.mount("mirror")
      return now.isReady && now.resumes == 1 && now.pid != before.pid
    }
    #expect(fuseMount(at: daemon.mountpoint("mirror"))?.id == mountID, "the same mount")
    #expect(try held.readToEnd() == Data("kept\n".utf8), "the open file still reads")
  }

  @Test("SIGUSR2 upgrades to the file the daemon was started from")
  func upgradeOnSIGUSR2() async throws {
    try await withDaemon([TestMount(name: "alpha")]) { daemon in
      #expect(try await daemon.ctl("wait-ready").status == 0)
      let before = try daemon.mount("alpha")
      let pid = try #require(daemon.process?.pid)
      kill(pid, SIGUSR2)
      try await waitFor("the upgrade done") { try daemon.status().service?.upgrades == 1 }
      let after = try daemon.mount("alpha")
      #expect(after.isReady && after.pid == before.pid && after.restarts == 0)
      #expect(daemon.log.contains("SIGUSR2: upgrading to the binary mountsupd was started from"))
      #expect(daemon.log.contains("upgraded from \(MountSupervisorRelease.identity) to "))
    }
  }

  @Test("an upgrade amid starts, backoffs and stops ends where they would have")
  func upgradeInAStorm() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write([
      TestMount(name: "steady"),
      TestMount(name: "held"),
      TestMount(name: "crashed", overrides: ["restart_delay": "\"2s\""]),
      TestMount(name: "stopping", arguments: ["--linger"], overrides: ["stop_timeout": "\"1s\""]),
      TestMount(name: "slow", arguments: ["--mount-delay", "1500"]),
    ])
    try await daemon.start()
    #expect(try await daemon.ctl("stop", "held").status == 0)
    try await waitFor("the others ready") {
      try ["steady", "crashed", "stopping"].allSatisfy { try daemon.mount($0).isReady }
    }
    let steady = try daemon.mount("steady")
    let crashed = try daemon.mount("crashed")
    kill(crashed.pid!, SIGKILL)
    // In backoff for 2 s; a parallel run can keep this task from looking that long, and then the
    // upgrade finds it restarted, which must end the same way.
    try await waitFor("crashed in backoff or past it") {
      let now = try daemon.mount("crashed")
      return now.state == "backoff" || now.restarts == 1
    }
    #expect(try await daemon.ctl("stop", "stopping", "--no-block").status == 0)
    // Its new worker mounts 1.5 s after the spawn: mid-start when the upgrade comes (unless a
    // busy machine keeps this test away that long).
    #expect(try await daemon.ctl("restart", "slow", "--no-block").status == 0)

    // A client waiting for a mount is told "upgrading" and asks the new binary again.
    let waiting = try daemon.spawnCtl(["wait-ready", "slow"])
    try await waitFor("wait-ready connected and waiting (or answered)") {
      isWaitingForAnAnswer(waiting.pid) || waiting.poll()
    }
    let upgrade = try await daemon.ctl("upgrade")
    #expect(upgrade.status == 0, "\(upgrade)\n\(daemon.log)")
    #expect(try await waiting.wait(timeout: .seconds(20)) == 0, "\(waiting.errors)")
    #expect(waiting.output == "ready: slow\n")

    try await waitFor("every mount where it was going", timeout: .seconds(20)) {
      let states = try ["steady", "held", "crashed", "stopping", "slow"].map {
        try daemon.mount($0).state
      }
      return states == ["ready", "stopped", "ready", "stopped", "ready"]
    }
    #expect(try daemon.mount("steady").pid == steady.pid)
    let restarted = try daemon.mount("crashed")
    #expect(restarted.restarts == 1 && restarted.pid != crashed.pid)
    #expect(try daemon.mount("held").stoppedByOperator)
    #expect(fuseMount(at: daemon.mountpoint("stopping")) == nil)
    #expect(processes(mentioning: daemon.mountpoint("stopping")).isEmpty, "its worker is gone")
    #expect(fuseMount(at: daemon.mountpoint("held")) == nil)
  }

  @Test("a new binary that dies after the exec takes its workers along; a restart clears up")
  func newBinaryDiesAfterTheExec() async throws {
    let daemon = try TestDaemon()
    defer { daemon.finish() }
    try daemon.write([TestMount(name: "alpha"), TestMount(name: "beta")])
    try await daemon.start()
    #expect(try await daemon.ctl("wait-ready").status == 0)
    let workers = try ["alpha", "beta"].map { try daemon.mount($0).pid! }
    let crasher = daemon.directory + "/crasher"
    try """
    #!/bin/sh
    if [ "$1" = --can-resume ]; then echo "9.9.9 (commit crasher)"; exit 0; fi
    kill -SEGV $$
    """.write(toFile: crasher, atomically: true, encoding: .utf8)
    chmod(crasher, 0o755)

    let upgrade = try await daemon.ctl("upgrade", "--binary", crasher)
    #expect(upgrade.status != 0, "no answer from a process that died: \(upgrade)")
    let code = try #require(daemon.process?.exitCode(within: .seconds(10)))
    #expect(code == 128 + SIGSEGV)
    try await waitFor("the workers gone with it") { workers.allSatisfy { !processExists($0) } }

    // What the service manager does next: start it again.
    try await daemon.start()
    #expect(try await daemon.ctl("wait-ready").status == 0)
    for name in ["alpha", "beta"] {
      #expect(mountTable().filter { $0.mountpoint == daemon.mountpoint(name) }.count == 1)
      #expect(readFile(daemon.mountpoint(name) + "/hello") == "hello from \(name)\n")
    }
  }
}
