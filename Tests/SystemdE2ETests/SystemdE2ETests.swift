import Foundation
import MountSupTestSupport
import Testing

/// The end-to-end test under a real systemd: `Tests/e2e/systemd-e2e.sh` boots systemd in a
/// `systemd-nspawn` container with the built binaries, the unit and the example configuration
/// installed, and drives mountsupd through systemctl (see `Tests/e2e/container-checks.sh`).
///
/// Where no container can run (not root, no systemd-nspawn, no /dev/fuse, nspawn refused), the
/// test is skipped with the reason printed: it never passes without having run.
@Suite struct SystemdE2ETests {
  @Test(
    "mountsupd under systemd: start, journal, watchdog, reload, crashes, stop, failure",
    .enabled(
      "needs root, /dev/fuse and a systemd-nspawn (systemd-container) that starts containers"
    ) {
      await E2EScript.machineCanRun()
    },
    .timeLimit(.minutes(4)))
  func systemdEndToEnd() async throws {
    let run = try await E2EScript.run([binDirectory])
    print(run.output, terminator: "")
    if run.status == E2EScript.skipped {
      try Test.cancel("the systemd end-to-end test cannot run here (see its output above)")
    }
    #expect(run.status == 0, "Tests/e2e/systemd-e2e.sh failed; its output is above")
  }
}

enum E2EScript {
  /// The exit status by which the script says that this machine cannot run it.
  static let skipped: Int32 = 77

  static let path = packageDirectory + "/Tests/e2e/systemd-e2e.sh"

  /// Asks the script whether a container can run here; prints why not when it cannot.
  static func machineCanRun() async -> Bool {
    guard let check = try? await run(["--check", binDirectory]) else {
      print("SKIPPED: cannot run \(path)")
      return false
    }
    if check.status == skipped { print(check.output, terminator: "") }
    return check.status != skipped
  }

  /// Runs the script with `arguments`; its stdout and stderr together.
  static func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await runProgram(["/bin/bash", path] + arguments)
  }
}
