import CLinuxSupport
import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// Workers that run as another user mount through fusermount3. Without `allow_other` the kernel
/// lets only that user reach their mount: root's statfs gets a made-up answer (even from a dead
/// mount) and everything else EACCES. bindfs runs here with `--no-allow-other`, the strict case.
@Suite struct OtherUserTests {
  private func bindfsCommand(source: String) -> [String] {
    ["bindfs", "-f", "--no-allow-other", source, "{mountpoint}"]
  }

  @Test func aWorkerRunAsAnotherUserIsProbedAsThatUserAndRecoversFromSIGKILL() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let user = TestUser.current
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/docs/hello", "hello from \(user.name)\n")
    let mountpoint = sandbox.path + "/mnt/bind"
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "bind", at: mountpoint, command: bindfsCommand(source: sandbox.path + "/source"),
        [
          "readiness": "\"probe\"", "probe_path": "\"docs\"", "user": toml(user.name),
          "group": toml(String(cString: getgrgid(user.gid).pointee.gr_name)),
        ]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }
    try expectReadyThenRecoveryFromSIGKILL(
      daemon: daemon, notify: notify,
      Served(
        mountpoint: mountpoint, file: "docs/hello", content: "hello from \(user.name)\n",
        read: user.read,
        reachableByTest: false))

    let mount = try #require(fuseMount(at: mountpoint))
    #expect(mount.superOptions.contains("user_id=\(user.uid),group_id=\(user.gid)"), "\(mount)")
    // The supervisor created the missing directories for the worker's user, as fusermount3
    // requires of a mountpoint (the mountpoint itself now shows the mount's root).
    var parent = stat()
    #expect(stat(sandbox.path + "/mnt", &parent) == 0 && parent.st_uid == user.uid)
    #expect(readFile(mountpoint + "/docs/hello") == nil, "root read a mount without allow_other")
  }

  @Test func aDeadMountOfAnotherUserIsDetachedBeforeTheStart() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let user = TestUser.current
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/hello", "hello again\n")
    let mountpoint = sandbox.path + "/mnt/bind"
    try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
    chown(mountpoint, user.uid, user.gid)

    // A leftover of an earlier life: the user's bindfs, killed, its mount still there.
    let leftover = Process()
    let argv = user.wrap([
      "/usr/bin/bindfs", "-f", "--no-allow-other", sandbox.path + "/source", mountpoint,
    ])
    leftover.executableURL = URL(fileURLWithPath: argv[0])
    leftover.arguments = Array(argv.dropFirst())
    leftover.standardOutput = FileHandle.nullDevice
    leftover.standardError = FileHandle.nullDevice
    try leftover.run()
    #expect(eventually { fuseMount(at: mountpoint) != nil }, "the leftover never mounted")
    kill(leftover.processIdentifier, SIGKILL)
    leftover.waitUntilExit()
    // This is what fooled a root statfs: the kernel answers it for a dead mount of another user.
    var fs = statfs()
    #expect(statfs(mountpoint, &fs) == 0)

    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "bind", at: mountpoint, command: bindfsCommand(source: sandbox.path + "/source"),
        ["readiness": "\"probe\"", "user": toml(user.name)]))
    let daemon = try Daemon(config: config, sandbox: sandbox, notify: notify)
    defer { daemon.stop() }
    let ready = try #require(
      notify.wait { $0.contains("READY=1") }, "no READY=1; log:\n\(daemon.log)")
    #expect(ready.fuseMountpoints.contains(mountpoint))
    #expect(
      daemon.log.contains(
        "detached a dead FUSE mount (fuse, \(sandbox.path)/source) left at \(mountpoint)"))
    #expect(user.read(mountpoint + "/hello") == "hello again\n")
    #expect(mountTable().filter { $0.mountpoint == mountpoint }.count == 1)
  }

  /// A supervisor that is not root unmounts and detaches through fusermount3 (`-u`, `-uz`).
  @Test func aSupervisorThatIsNotRootCleansUpThroughFusermount3() throws {
    try #require(machineProblem == nil, "\(machineProblem ?? "")")
    let user = TestUser.current
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    try sandbox.write("source/hello", "hello from a user's supervisor\n")
    let own = sandbox.path + "/own"
    try FileManager.default.createDirectory(atPath: own, withIntermediateDirectories: true)
    chown(own, user.uid, user.gid)
    let mountpoint = own + "/mnt/bind"
    let notify = try NotifyReceiver(in: sandbox)
    let config = try sandbox.writeConfig(
      mountSection(
        "bind", at: mountpoint, command: bindfsCommand(source: sandbox.path + "/source"),
        ["readiness": "\"probe\"", "stop_timeout": "\"5s\""]),
      controlSocket: own + "/control.sock")
    let daemon = try Daemon(
      config: config, sandbox: sandbox, notify: notify, launcher: user.setpriv)
    defer { daemon.stop() }
    try expectReadyThenRecoveryFromSIGKILL(
      daemon: daemon, notify: notify,
      Served(
        mountpoint: mountpoint, file: "hello", content: "hello from a user's supervisor\n",
        read: user.read,
        reachableByTest: false))

    let started = Date()
    daemon.signal(SIGTERM)
    #expect(daemon.exitCode() == 0)
    #expect(Date().timeIntervalSince(started) < 2, "the unmount did not work; log:\n\(daemon.log)")
    #expect(daemon.log.contains("bind: stopped (exited with status 0)"), "log:\n\(daemon.log)")
    #expect(fuseMount(at: mountpoint) == nil)
  }
}
