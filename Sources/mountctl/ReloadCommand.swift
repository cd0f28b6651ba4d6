import ArgumentParser
import FoundationEssentials
import Glibc
import MountControl
import MountDuration

struct Reload: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Re-read the configuration and apply it; return when the new set of mounts has settled.",
    discussion: """
      Added mounts are started, removed ones stopped, changed ones restarted, unchanged ones left \
      alone (same worker, never remounted). Returns when every added and changed mount is ready or \
      has failed. Exits 0 when every added and changed mount is ready (or stopped by an \
      operator), 1 when one failed (the new configuration is applied all the same) or the \
      configuration is invalid (then nothing changed). This is what ExecReload= of \
      mountsupd.service runs.

      Examples:
        mountctl reload
      """)

  @OptionGroup var connection: Connection

  func run() throws {
    let response: ControlResponse
    do {
      response = try connection.request(ControlRequest(.reload), timeout: nil)
    } catch {
      throw failure(error)
    }
    guard response.ok, let reload = response.reload else {
      printError("mountctl: reload failed: \(response.error?.message ?? "no reason given")")
      throw exitStatus(forRefusal: response.error)
    }
    let states = Dictionary((response.mounts ?? []).map { ($0.name, $0) }) { first, _ in first }
    func list(_ names: [String], withState: Bool) -> String {
      guard !names.isEmpty else { return "none" }
      return names.map { name in
        guard withState, let mount = states[name] else { return name }
        return "\(name) (\(mount.detail))"
      }.joined(separator: ", ")
    }
    print("added: \(list(reload.added, withState: true))")
    print("removed: \(list(reload.removed, withState: false))")
    print("changed: \(list(reload.changed, withState: true))")
    print("unchanged: \(list(reload.unchanged, withState: false))")
    // The answer carries the added and changed mounts; one that is neither ready nor held by an
    // operator's stop did not come up.
    let failed = (response.mounts ?? []).filter { !$0.isReady && !$0.stoppedByOperator }
    guard failed.isEmpty else {
      printError(
        "mountctl: reload applied, but "
          + failed.map { "\($0.name) is not ready (\($0.detail))" }.joined(separator: "; "))
      for mount in failed where !mount.lastErrorOutput.isEmpty {
        printError("last output of \(mount.name):")
        for line in mount.lastErrorOutput.suffix(10) { printError("  | \(line)") }
      }
      throw Exit.failure
    }
  }
}
