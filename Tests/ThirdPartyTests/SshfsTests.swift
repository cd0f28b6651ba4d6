import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// sshfs mounts before it has even connected, so neither its mount nor its silence means ready:
/// readiness `probe` with a `probe_path` that only the server can answer.
@Suite struct SshfsTests {
  @Test func probeModeWaitsForTheServerThenServesAndRecoversFromSIGKILL() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let server = try SSHServer(in: sandbox)
    defer { server.stop() }
    try sandbox.write("remote/docs/hello", "hello over ssh\n")
    let mountpoint = sandbox.path + "/mnt/ssh"
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "ssh", at: mountpoint, command: server.sshfsCommand(remotePath: sandbox.path + "/remote"),
        ["readiness": "\"probe\"", "probe_path": "\"docs\""]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }

    // The server holds the first connection unanswered: sshfs mounts anyway.
    let first = try #require(server.accept(), "sshfs never connected; log:\n\(daemon.log)")
    #expect(
      eventually { fuseMount(at: mountpoint) != nil }, "sshfs did not mount before connecting")
    // A window in which a READY taken from the mount alone would arrive; the probe must hold it.
    #expect(
      notify.wait(within: .milliseconds(500)) { $0.contains("READY=1") } == nil,
      "READY before the server answered"
    )
    try server.serve(first)

    try expectReadyThenRecoveryFromSIGKILL(
      daemon: daemon, notify: notify,
      Served(mountpoint: mountpoint, file: "docs/hello", content: "hello over ssh\n")
    ) {
      try server.serve(
        #require(server.accept(), "the restarted sshfs never connected; log:\n\(daemon.log)"))
    }
    #expect(server.log.contains("Accepted publickey for root"))
  }

  @Test func aRefusedConnectionFailsWithTheProgramsOwnWords() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let server = try SSHServer(in: sandbox)
    defer { server.stop() }
    let port = refusedPort()
    try expectStartFailure(
      sandbox: sandbox, name: "ssh", mountpoint: sandbox.path + "/mnt/ssh",
      command: server.sshfsCommand(remotePath: "/", port: port),
      settings: ["readiness": "\"probe\"", "probe_path": "\".\""],
      // The line that says why, not merely the last one, which sshfs words by chance
      // ("read: Connection reset by peer" or "write: Broken pipe").
      statusWords: "ssh: connect to host 127.0.0.1 port \(port): Connection refused")
  }
}
