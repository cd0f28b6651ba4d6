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
