import Foundation
import Glibc
import MountSupTestSupport
import Testing

/// mountsupd as PID 1 of a PID namespace, as in a container of a pod.
@Suite struct ContainerInitTests {
  @Test("as PID 1 of a PID namespace, SIGTERM from outside still unmounts and stops everything")
  func stopsAsInitOfANamespace() throws {
    let sandbox = try Sandbox()
    defer { sandbox.cleanUp() }
    let mountpoint = "\(sandbox.path)/one"
    let config = try sandbox.writeConfig(mountSection("one", at: mountpoint))
    // unshare forks the daemon as PID 1 of a new PID namespace and exits with its status.
    let launcher = try Daemon(
      config: config, sandbox: sandbox, launcher: ["/usr/bin/unshare", "--pid", "--fork"])
    defer { launcher.stop() }
    #expect(eventually { fuseMount(at: mountpoint) != nil }, "not mounted; log:\n\(launcher.log)")
    let daemon = try #require(
      childPIDs(of: launcher.pid).first { commandLine(of: $0).contains("mountsupd") })
    let namespacePID = try String(contentsOfFile: "/proc/\(daemon)/status", encoding: .utf8)
      .split(separator: "\n").first { $0.hasPrefix("NSpid:") }?
      .split(whereSeparator: \.isWhitespace).last
    #expect(namespacePID == "1", "the daemon is not PID 1 of its namespace")

    kill(daemon, SIGTERM)
    #expect(launcher.exitCode() == 0, "no clean stop after SIGTERM; log:\n\(launcher.log)")
    #expect(fuseMount(at: mountpoint) == nil)
    #expect(launcher.log.contains("all mounts stopped"))
  }
}
