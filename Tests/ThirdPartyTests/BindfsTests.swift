import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// bindfs says nothing when it has mounted: readiness `probe`.
@Suite struct BindfsTests {
  @Test func probeModeReadyServesAndRecoversFromSIGKILL() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/hello", "hello from bindfs\n")
    let mountpoint = sandbox.path + "/mnt/bind"
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "bind", at: mountpoint,
        command: ["bindfs", "-f", sandbox.path + "/source", "{mountpoint}"],
        ["readiness": "\"probe\""]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }
    try expectReadyThenRecoveryFromSIGKILL(
      daemon: daemon, notify: notify,
      Served(mountpoint: mountpoint, file: "hello", content: "hello from bindfs\n"))
  }

  /// A stopped bindfs answers nothing: the hang check finds it, aborts the connection (the
  /// blocked `stat` gets an error), ends it and starts a new one.
  @Test func aStoppedBindfsIsFoundHungAndReplaced() async throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/hello", "hello from bindfs\n")
    let mountpoint = sandbox.path + "/mnt/bind"
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "bind", at: mountpoint,
        command: ["bindfs", "-f", sandbox.path + "/source", "{mountpoint}"],
        ["readiness": "\"probe\"", "hang_timeout": "\"2s\"", "stop_timeout": "\"1s\""]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }
    try #require(notify.wait { $0.contains("READY=1") } != nil, "no READY=1:\n\(daemon.log)")
    let stopped = try #require(daemon.workerPIDs(matching: mountpoint).first)
    // Let the daemon end it whatever happens below.
    defer { kill(stopped, SIGCONT) }
    kill(stopped, SIGSTOP)
    // A name never looked up: the kernel has to ask bindfs.
    let blocked = try Spawned(
      ["/usr/bin/stat", mountpoint + "/never-looked-up"], outputPath: sandbox.path + "/stat.out",
      errorPath: sandbox.path + "/stat.err")
    defer {
      kill(blocked.pid, SIGKILL)
      _ = blocked.waitBlocking(timeout: .seconds(20))
    }
    // hang_timeout (2 s) plus one check period (500 ms), and the margin of a loaded machine.
    #expect(blocked.waitBlocking(timeout: .seconds(8)), "still blocked:\n\(daemon.log)")
    #expect(blocked.status != 0 && blocked.errors.contains("connection abort"), "\(blocked.errors)")
    let replaced = eventually {
      let now = daemon.workerPIDs(matching: mountpoint)
      return now.count == 1 && now[0] != stopped
        && readFile(mountpoint + "/hello") == "hello from bindfs\n"
    }
    #expect(replaced, "no new bindfs serves:\n\(daemon.log)")
    #expect(daemon.log.contains("hung: statfs of \(mountpoint) unanswered for 2s"), "\(daemon.log)")
    #expect(mountTable().filter { $0.mountpoint == mountpoint }.count == 1, "nothing stacked")
  }

  @Test func aMissingSourceDirectoryFailsWithBindfsOwnWords() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try expectStartFailure(
      sandbox: sandbox, name: "bind", mountpoint: sandbox.path + "/mnt/bind",
      command: ["bindfs", "-f", sandbox.path + "/no-such-source", "{mountpoint}"],
      settings: ["readiness": "\"probe\""],
      statusWords:
        "Failed to resolve source directory `\(sandbox.path)/no-such-source': No such file or directory"
    )
  }

  /// Without `-f` bindfs forks into the background: its parent exits 0 while the mount lives on
  /// in the child. The supervisor must not take that for a start, must clean up after it and
  /// must say what to change.
  @Test func aProgramThatGoesToTheBackgroundIsAFailureWithAHint() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/hello", "hello\n")
    let mountpoint = sandbox.path + "/mnt/bind"
    // The probe path does not exist, so the probe cannot answer before the parent exits.
    try expectStartFailure(
      sandbox: sandbox, name: "bind", mountpoint: mountpoint,
      command: ["bindfs", sandbox.path + "/source", "{mountpoint}"],
      settings: ["readiness": "\"probe\"", "probe_path": "\"not-there\""],
      statusWords: "exited with status 0 before its mount was ready",
      logWords: ["the program went to the background; run it in the foreground"])
  }
}
