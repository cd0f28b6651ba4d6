import Foundation
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
    let run = try await E2EScript.run([E2EScript.binDirectory])
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

  static let path = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("e2e/systemd-e2e.sh").path

  /// Where `swift test` put the built executables: beside the test bundle.
  static let binDirectory: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
    return URL(fileURLWithPath: exe).deletingLastPathComponent().path
  }()

  /// Asks the script whether a container can run here; prints why not when it cannot.
  static func machineCanRun() async -> Bool {
    guard let check = try? await run(["--check", binDirectory]) else {
      print("SKIPPED: cannot run \(path)")
      return false
    }
    if check.status == skipped { print(check.output, terminator: "") }
    return check.status != skipped
  }

  /// Runs the script with `arguments`; its stdout and stderr together. It takes a while, so it is
  /// awaited, not waited for: a blocked thread would starve the tests running beside it.
  static func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let outputPath = FileManager.default.temporaryDirectory
      .appendingPathComponent("mountsup-e2e-\(UUID().uuidString).log").path
    FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    defer { try? output.close() }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = [path] + arguments
    process.standardOutput = output
    process.standardError = output
    process.standardInput = FileHandle.nullDevice
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
      process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
      do {
        try process.run()
      } catch {
        process.terminationHandler = nil
        continuation.resume(throwing: error)
      }
    }
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    return (status, text)
  }
}
