import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// rclone mount runs in the foreground unless given `--daemon` and sends sd_notify `READY=1` at
/// the moment its mount is up: readiness `notify`. Its config comes from `RCLONE_CONFIG` in the
/// mount's `environment`.
@Suite struct RcloneTests {
  private func rcloneConfig(in sandbox: Sandbox) throws -> String {
    try sandbox.write("rclone.conf", "[store]\ntype = local\n")
  }

  @Test func notifyModeReadyComesFromRcloneAndItRecoversFromSIGKILL() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("store/hello", "hello from rclone\n")
    let mountpoint = sandbox.path + "/mnt/remote"
    let notify = try NotifyReceiver(in: sandbox)
    let command = [
      "rclone", "mount", "store:\(sandbox.path)/store", "{mountpoint}", "--cache-dir",
      sandbox.path + "/cache",
    ]
    let config = try sandbox.writeConfig(
      mountSection(
        "remote", at: mountpoint, command: command,
        [
          "readiness": "\"notify\"",
          "environment": "{ RCLONE_CONFIG = \(toml(rcloneConfig(in: sandbox))) }",
        ]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }
    try expectReadyThenRecoveryFromSIGKILL(
      daemon: daemon, notify: notify,
      Served(mountpoint: mountpoint, file: "hello", content: "hello from rclone\n"))

    // rclone's STOPPING=1 travels the same socket when the supervisor unmounts it.
    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    #expect(daemon.log.contains("remote: worker is stopping"), "log:\n\(daemon.log)")
    #expect(fuseMount(at: mountpoint) == nil)
  }

  @Test func aRemoteMissingFromTheConfigFailsWithRcloneOwnWords() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try expectStartFailure(
      sandbox: sandbox, name: "remote", mountpoint: sandbox.path + "/mnt/remote",
      command: ["rclone", "mount", "absent:data", "{mountpoint}"],
      settings: [
        "readiness": "\"notify\"",
        "environment": "{ RCLONE_CONFIG = \(toml(rcloneConfig(in: sandbox))) }",
      ],
      statusWords:
        "Failed to create file system for \"absent:data\": didn't find section in config file")
  }
}
