import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// squashfuse serves a squashfs image and says nothing when it has mounted: readiness `probe`.
@Suite struct SquashfuseTests {
  @Test func probeModeReadyServesTheImageAndRecoversFromSIGKILL() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("content/docs/hello", "hello from squashfs\n")
    let image = sandbox.path + "/image.sqsh"
    let made = run([
      "/usr/bin/mksquashfs", sandbox.path + "/content", image, "-quiet", "-no-progress",
      "-noappend",
    ])
    try #require(made.status == 0, "mksquashfs: \(made.output)")
    let mountpoint = sandbox.path + "/mnt/image"
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "image", at: mountpoint, command: ["squashfuse", "-f", image, "{mountpoint}"],
        ["readiness": "\"probe\"", "probe_path": "\"docs\""]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }
    try expectReadyThenRecoveryFromSIGKILL(
      daemon: daemon, notify: notify,
      Served(mountpoint: mountpoint, file: "docs/hello", content: "hello from squashfs\n"))
  }

  @Test func aCorruptImageFailsWithSquashfuseOwnWords() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let image = try sandbox.write(
      "corrupt.sqsh", String(repeating: "not a squashfs superblock\n", count: 200))
    try expectStartFailure(
      sandbox: sandbox, name: "image", mountpoint: sandbox.path + "/mnt/image",
      command: ["squashfuse", "-f", image, "{mountpoint}"], settings: ["readiness": "\"probe\""],
      statusWords: "This doesn't look like a squashfs image.")
  }
}
