import CLinuxSupport
import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// The daemon with real worker processes and real FUSE mounts, checked the way an operator
/// would check: the mount table, files served, the service manager's messages, exit codes.
@Suite struct SupervisorTests {
  @Test func readyArrivesOnlyWhenEveryRequiredMountIsInTheMountTable() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("fast", at: "\(sandbox.path)/fast")
        + mountSection(
          "slow", at: "\(sandbox.path)/slow", workerOptions: ["--mount-delay", "1000"])
        + mountSection("s6", at: "\(sandbox.path)/s6", workerOptions: ["--s6", "--garbage"]))
    defer { daemon.stop() }

    let ready = try #require(
      notify.wait { $0.contains("READY=1") }, "no READY=1; log:\n\(daemon.log)")
    for name in ["fast", "slow", "s6"] {
      #expect(
        ready.fuseMountpoints.contains("\(sandbox.path)/\(name)"),
        "\(name) was not mounted at READY")
    }
    #expect(ready.text.contains("STATUS=3/3 mounts ready"))
    #expect(readFile("\(sandbox.path)/slow/hello") == "hello from slow\n")

    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    notify.drain()
    #expect(notify.count("READY=1") == 1)
    #expect(notify.count("STOPPING=1") == 1)
  }

  @Test func extendsTheStartTimeoutWhileMountsAreStarting() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("slow", at: "\(sandbox.path)/slow", workerOptions: ["--mount-delay", "500"]))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    #expect(notify.messages.contains { $0.text.contains("EXTEND_TIMEOUT_USEC=") })
    #expect(notify.messages.contains { $0.text.contains("slow: starting") })
  }

  @Test func aFailingRequiredWorkerFailsTheServiceWithItsOwnWords() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("good", at: "\(sandbox.path)/good")
        + mountSection(
          "photos", at: "\(sandbox.path)/photos",
          workerOptions: ["--fail", "container photos does not exist"],
          ["start_limit_burst": "2", "restart_delay": "\"20ms\""]))
    defer { daemon.stop() }

    #expect(daemon.exitCode() == 1)
    notify.drain()
    #expect(notify.count("READY=1") == 0)
    #expect(notify.messages.contains { $0.text.contains("ERRNO=2") })
    #expect(
      notify.messages.contains {
        $0.text.contains("STATUS=failed: photos:")
          && $0.text.contains("container photos does not exist")
      })
    #expect(daemon.log.contains("container photos does not exist"))
    #expect(fuseMount(at: "\(sandbox.path)/good") == nil, "the good mount was left behind")
  }

  @Test func aSpawnThatFailsInTheChildSaysWhichStepAndWhy() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    // Executable, but no program the kernel can run: exec fails with ENOEXEC in the child.
    let program = "\(sandbox.path)/not-a-program"
    try "just words\n".write(toFile: program, atomically: true, encoding: .utf8)
    chmod(program, 0o755)
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "broken", at: "\(sandbox.path)/broken", command: [program, "{mountpoint}"],
        ["restart": "\"never\""]))
    defer { daemon.stop() }
    #expect(daemon.exitCode() == 1, "log:\n\(daemon.log)")
    notify.drain()
    #expect(
      notify.messages.contains {
        $0.text.contains("STATUS=failed: broken:")
          && $0.text.contains("cannot start \(program): exec failed: Exec format error")
      }, "log:\n\(daemon.log)")
    #expect(daemon.workerPIDs(matching: sandbox.path).isEmpty)
  }

  @Test func theWorkersStderrIsTheReasonWhenItSaysNothingElse() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "quiet", at: "\(sandbox.path)/quiet",
        workerOptions: ["--fail-quietly", "permission denied by the server"],
        ["restart": "\"never\""]))
    defer { daemon.stop() }
    #expect(daemon.exitCode() == 1)
    notify.drain()
    #expect(notify.messages.contains { $0.text.contains("permission denied by the server") })
    #expect(notify.count("READY=1") == 0)
  }

  @Test(arguments: [["--hang-before-init"], ["--no-ready"]])
  func noConfirmationWithinTheStartTimeoutIsAFailure(options: [String]) throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/stuck"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "stuck", at: mountpoint, workerOptions: options,
        ["start_timeout": "\"700ms\"", "restart": "\"never\""]))
    defer { daemon.stop() }
    #expect(daemon.exitCode() == 1)
    notify.drain()
    #expect(notify.count("READY=1") == 0)
    #expect(notify.messages.contains { $0.text.contains("no confirmed FUSE init within 700ms") })
    #expect(fuseMount(at: mountpoint) == nil, "the worker's mount was not cleaned")
    #expect(daemon.workerPIDs(matching: mountpoint).isEmpty)
  }

  @Test func aKilledWorkerIsRestartedAndItsDeadMountCleaned() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/data"
    let (notify, daemon) = try sandbox.startDaemon(mountSection("data", at: mountpoint))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    let pid = try #require(daemon.workerPIDs(matching: mountpoint).first)

    kill(pid, SIGKILL)
    #expect(
      eventually {
        let workers = daemon.workerPIDs(matching: mountpoint)
        guard workers.count == 1, workers != [pid], fuseMount(at: mountpoint) != nil else {
          return false
        }
        return readFile("\(mountpoint)/hello") == "hello from data\n"
      }, "the mount does not serve again; log:\n\(daemon.log)")
    #expect(daemon.log.contains("killed by signal 9 (SIGKILL)"))
    #expect(
      mountTable().filter { $0.mountpoint == mountpoint }.count == 1,
      "the dead mount is still stacked there")
    notify.drain()
    #expect(notify.count("READY=1") == 1)
    #expect(notify.count("STOPPING=1") == 0)
  }

  @Test func anOptionalMountThatKeepsCrashingEndsFailedWithoutHoldingReady() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("steady", at: "\(sandbox.path)/steady")
        + mountSection(
          "flaky", at: "\(sandbox.path)/flaky", workerOptions: ["--crash-after", "50"],
          ["required": "false", "start_limit_burst": "3", "restart_delay": "\"10ms\""]))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    let failed = notify.wait { $0.contains("flaky: failed: start limit reached (3 starts") }
    #expect(failed != nil, "log:\n\(daemon.log)")
    #expect(daemon.log.contains("killed by signal 14"))
    #expect(fuseMount(at: "\(sandbox.path)/flaky") == nil)
    #expect(fuseMount(at: "\(sandbox.path)/steady") != nil)
  }

  @Test func aDeadMountLeftAtTheMountpointIsDetachedBeforeTheStart() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/data"
    let leftover = try startForeignWorker(at: mountpoint)
    #expect(eventually { fuseMount(at: mountpoint) != nil })
    kill(leftover.processIdentifier, SIGKILL)
    leftover.waitUntilExit()
    var fs = statfs()
    #expect(statfs(mountpoint, &fs) != 0 && errno == ENOTCONN)

    let (notify, daemon) = try sandbox.startDaemon(mountSection("data", at: mountpoint))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    #expect(readFile("\(mountpoint)/hello") == "hello from data\n")
    #expect(daemon.log.contains("detached a dead FUSE mount"))
  }

  @Test func aLiveWorkerLeftByAnEarlierRunIsReplaced() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/data"
    // As a worker of an earlier supervisor that outlived it: its environment names the mount.
    let leftover = try startForeignWorker(
      at: mountpoint, environment: ["MOUNTSUP_MOUNTPOINT": mountpoint, "MOUNTSUP_NAME": "data"])
    defer {
      kill(leftover.processIdentifier, SIGKILL)
      leftover.waitUntilExit()
    }
    #expect(eventually { readFile("\(mountpoint)/hello") == "hello from data\n" })

    let (notify, daemon) = try sandbox.startDaemon(mountSection("data", at: mountpoint))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    #expect(daemon.log.contains("a worker left by an earlier run of the supervisor"))
    #expect(eventually { !processExists(leftover.processIdentifier) })
    #expect(daemon.workerPIDs(matching: mountpoint).count == 1)
    #expect(mountTable().filter { $0.mountpoint == mountpoint }.count == 1)
    #expect(readFile("\(mountpoint)/hello") == "hello from data\n")
  }

  @Test func aLiveForeignMountAndANonFUSEMountAreLeftAlone() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let foreignPoint = "\(sandbox.path)/foreign"
    let foreign = try startForeignWorker(at: foreignPoint)
    defer {
      // SIGKILL: a child of the test runner inherits its blocked signals, SIGTERM among them.
      kill(foreign.processIdentifier, SIGKILL)
      foreign.waitUntilExit()
    }
    #expect(eventually { fuseMount(at: foreignPoint) != nil })
    let foreignMount = try #require(fuseMount(at: foreignPoint))
    let tmpfsPoint = "\(sandbox.path)/tmpfs"
    try FileManager.default.createDirectory(atPath: tmpfsPoint, withIntermediateDirectories: true)
    #expect(mount("tmpfs", tmpfsPoint, "tmpfs", 0, nil) == 0)

    let optional = ["required": "false", "restart": "\"never\""]
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("mine", at: "\(sandbox.path)/mine")
        + mountSection("foreign", at: foreignPoint, optional)
        + mountSection("tmpfs", at: tmpfsPoint, optional))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    #expect(
      eventually {
        daemon.log.contains("a live FUSE mount") && daemon.log.contains("a tmpfs mount")
      }, "log:\n\(daemon.log)")
    #expect(fuseMount(at: foreignPoint) == foreignMount)
    #expect(readFile("\(foreignPoint)/hello") == "hello from testworker\n")
    #expect(mountTable().contains { $0.mountpoint == tmpfsPoint && $0.fsType == "tmpfs" })

    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    #expect(
      fuseMount(at: foreignPoint) == foreignMount, "the foreign mount was touched by the stop")
  }

  @Test func nestedMountsStartParentFirstAndStopChildFirstLeavingNothing() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let parent = "\(sandbox.path)/outer"
    let child = "\(parent)/sub"
    // Named so that name order and nesting order disagree.
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection("a-inner", at: child) + mountSection("z-outer", at: parent))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    #expect(fuseMount(at: parent) != nil && fuseMount(at: child) != nil)
    let outerReady = try #require(daemon.log.range(of: "z-outer: ready"))
    let innerStarting = try #require(daemon.log.range(of: "a-inner: starting"))
    #expect(outerReady.lowerBound < innerStarting.lowerBound)
    #expect(readFile("\(child)/hello") == "hello from a-inner\n")
    let workers = daemon.workerPIDs(matching: sandbox.path)
    #expect(workers.count == 2)

    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    let log = daemon.log
    let innerStopped = try #require(log.range(of: "a-inner: stopped"))
    let outerStopping = try #require(log.range(of: "z-outer: stopping"))
    #expect(innerStopped.lowerBound < outerStopping.lowerBound)
    #expect(mountTable().allSatisfy { !$0.mountpoint.hasPrefix(sandbox.path + "/") })
    #expect(workers.allSatisfy { !processExists($0) })
  }

  @Test func aShutdownUnmountsManyMountsAtOnceAndABusyOneIsDetached() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let names = (0..<12).map { "m\($0)" }
    let (notify, daemon) = try sandbox.startDaemon(
      names.map { mountSection($0, at: "\(sandbox.path)/\($0)", ["stop_timeout": "\"1s\""]) }
        .joined())
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    let workers = daemon.workerPIDs(matching: sandbox.path)
    #expect(workers.count == names.count)
    // An open file keeps m3 busy: its unmount falls back to a lazy detach.
    let busy = open("\(sandbox.path)/m3/hello", O_RDONLY | O_CLOEXEC)
    #expect(busy >= 0)
    defer { if busy >= 0 { close(busy) } }

    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0, "log:\n\(daemon.log)")
    for name in names {
      #expect(daemon.log.contains("\(name): stopped"), "log:\n\(daemon.log)")
    }
    #expect(mountTable().allSatisfy { !$0.mountpoint.hasPrefix(sandbox.path + "/") })
    #expect(workers.allSatisfy { !processExists($0) })
  }

  @Test func aWorkerThatIgnoresTheStopIsKilledAndTheStopStillCompletes() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/stubborn"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "stubborn", at: mountpoint, workerOptions: ["--linger"], ["stop_timeout": "\"200ms\""]))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    let pid = try #require(daemon.workerPIDs(matching: mountpoint).first)
    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    #expect(daemon.log.contains("sending SIGKILL"))
    #expect(!processExists(pid))
    #expect(fuseMount(at: mountpoint) == nil)
  }

  @Test func readinessModeNotifyTakesReadyFromTheWorkersOwnNotifySocket() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/rclone-like"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "sd", at: mountpoint, workerOptions: ["--sd-notify"], ["readiness": "\"notify\""]))
    defer { daemon.stop() }
    let ready = try #require(notify.wait { $0.contains("READY=1") }, "log:\n\(daemon.log)")
    #expect(ready.fuseMountpoints.contains(mountpoint))
    #expect(daemon.log.contains("status: serving via sd_notify"))
  }

  @Test func libsystemdIsLoadedOnlyWhenSystemdStartedTheDaemon() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    func mapsLibsystemd(_ daemon: Daemon) -> Bool {
      // Read to the end: a single read of a procfs file stops at a page.
      let maps = FileHandle(forReadingAtPath: "/proc/\(daemon.pid)/maps")
      defer { try? maps?.close() }
      let text = (try? maps?.readToEnd()).flatMap { $0.map { String(decoding: $0, as: UTF8.self) } }
      return text?.contains("libsystemd.so") ?? false
    }
    let (notify, plain) = try sandbox.startDaemon(mountSection("a", at: "\(sandbox.path)/a"))
    defer { plain.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(plain.log)")
    #expect(!mapsLibsystemd(plain), "a start from a shell needs none of it")
    #expect(plain.stop() == 0)

    // A watchdog is systemd's: the library comes, and the pings with it.
    let watched = try Daemon(
      config: sandbox.path + "/mounts.toml", sandbox: sandbox, notify: notify,
      environment: ["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": nil])
    defer { watched.stop() }
    #expect(notify.wait { $0.contains("WATCHDOG=1") } != nil, "log:\n\(watched.log)")
    #expect(mapsLibsystemd(watched))
  }

  @Test func theDescriptorTableIsSizedForTheMountsFromTheStart() throws {
    // Grown later, with threads running, each doubling would wait for an RCU grace period.
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mounts = (0..<40).map { mountSection("m\($0)", at: "\(sandbox.path)/m\($0)") }
    let (notify, daemon) = try sandbox.startDaemon(mounts.joined())
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil, "log:\n\(daemon.log)")
    let status = readFile("/proc/\(daemon.pid)/status") ?? ""
    let size = status.split(separator: "\n").first { $0.hasPrefix("FDSize:") }
      .flatMap { Int($0.dropFirst("FDSize:".count).trimmingCharacters(in: .whitespaces)) }
    #expect((size ?? 0) >= 256 + 40 * 6, "\(status)")
  }

  @Test func theDaemonDiesWithItsWorkersNotWithoutThem() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/data"
    let (notify, daemon) = try sandbox.startDaemon(mountSection("data", at: mountpoint))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    let pid = try #require(daemon.workerPIDs(matching: mountpoint).first)
    daemon.signal(SIGKILL)
    #expect(eventually { !processExists(pid) }, "the worker outlived its supervisor")
    #expect(eventually { fuseMount(at: mountpoint) == nil })
  }

  @Test func aWorkerGetsFd3ItsOwnSessionAndNothingElseOfTheSupervisor() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/data"
    let (notify, daemon) = try sandbox.startDaemon(
      mountSection(
        "data", at: mountpoint,
        ["environment": "{ EXTRA = \"{name}@{mountpoint}\", PATH = \"/usr/bin:/bin\" }"]))
    defer { daemon.stop() }
    #expect(notify.wait { $0.contains("READY=1") } != nil)
    let pid = try #require(daemon.workerPIDs(matching: mountpoint).first)

    let environ = String(
      decoding: FileManager.default.contents(atPath: "/proc/\(pid)/environ") ?? Data(),
      as: UTF8.self
    )
    .split(separator: "\0").map(String.init)
    #expect(environ.contains("MOUNTSUP_NOTIFY_FD=3"))
    #expect(environ.contains("MOUNTSUP_NAME=data"))
    #expect(environ.contains("MOUNTSUP_MOUNTPOINT=\(mountpoint)"))
    #expect(environ.contains("EXTRA=data@\(mountpoint)"))
    // The spec's value replaces the one the supervisor has.
    #expect(environ.filter { $0.hasPrefix("PATH=") } == ["PATH=/usr/bin:/bin"])
    #expect(
      !environ.contains { $0.hasPrefix("NOTIFY_SOCKET=") }, "the supervisor's NOTIFY_SOCKET leaked")

    let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap(
      Int.init
    ).sorted()
    let target = { (fd: Int) in
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? ""
    }
    #expect(target(0) == "/dev/null")
    #expect(target(1).hasPrefix("pipe:") && target(1) == target(2))
    #expect(target(3).hasPrefix("socket:"))
    // Beyond 0–3 only what the worker opened itself: its /dev/fuse.
    #expect(
      fds.filter { $0 > 3 }.allSatisfy { target($0) == "/dev/fuse" },
      "\(fds.map { "\($0) → \(target($0))" })")
    #expect(getsid(pid) == pid, "the worker is not in a session of its own")
  }

  @Test func invalidConfigurationsAreRefusedWithFileMountAndKey() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let cases: [(String, [String])] = [
      (
        "[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"x\"]\nstart_timeuot = \"1s\"\n",
        ["mount \"a\"", "start_timeuot"]
      ),
      ("[mounts.a]\nmountpoint = \"mnt/a\"\ncommand = [\"x\"]\n", ["mount \"a\"", "mountpoint"]),
      ("[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = []\n", ["mount \"a\"", "command"]),
      (
        "[mounts.a]\nmountpoint = \"/mnt/a\"\ncommand = [\"x\"]\nstop_timeout = \"soon\"\n",
        ["mount \"a\"", "stop_timeout"]
      ),
    ]
    for (index, (text, needles)) in cases.enumerated() {
      let file = try sandbox.write("bad\(index).toml", text)
      for arguments in [["--config", file], ["--check-config", "--config", file]] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: daemonBinary)
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = String(
          decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 1)
        for needle in needles + [file] {
          #expect(output.contains(needle), "\(arguments): \(output)")
        }
      }
    }
  }
}
