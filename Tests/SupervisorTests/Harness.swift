import Foundation
import MountSupTestSupport

/// Starts a test worker directly (no supervisor), for mounts the supervisor did not make.
func startForeignWorker(
  at mountpoint: String, options: [String] = [], environment: [String: String] = [:]
) throws -> Process {
  try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
  let process = Process()
  process.executableURL = URL(fileURLWithPath: testWorker)
  process.arguments = options + [mountpoint]
  process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
  process.standardOutput = FileHandle.nullDevice
  process.standardError = FileHandle.nullDevice
  try process.run()
  return process
}
