import CLinuxSupport
import Foundation
import Glibc
import MountConfig
import MountCore

/// Everything of a running supervisor that an upgrade hands to the new binary across `execve`
/// (same process, same pid): the core's snapshot and the runtime's records. The descriptors the
/// records name stay open under the same numbers (their close-on-exec flag is cleared just
/// before the exec), so every worker keeps its pidfd, socketpair and output pipe.
///
/// It travels as JSON in a memfd named by `MOUNTSUP_UPGRADE_STATE`. The format is versioned: a
/// binary reads only the formats it knows, and `mountsupd --can-resume FORMAT` tells the old
/// binary so before it gives anything up.
struct UpgradeState: Codable {
  static let format = 1
  static let environmentKey = "MOUNTSUP_UPGRADE_STATE"

  var format = Self.format
  /// The identity (release and commit) of the binary that handed over.
  var fromVersion: String
  /// When the upgrade was asked for, for "upgraded … in N ms".
  var requestedAt: MonotonicInstant
  var configuration: ConfigurationRecord
  var core: SupervisorCore.Snapshot
  var workers: [WorkerRecord]
  /// Exited workers whose output pipe a grandchild still holds.
  var orphanedOutputs: [WorkerRecord]
  var lastMountSites: [String: MountSiteRecord]
  var outputs: [String: OutputLog]
  var nextWorkerID: Int
  var control: ControlRecord
  var reload: ReloadCoordinator.Record
  var startedAt: Double
  /// The file the daemon was first started from: the default of every later upgrade, whatever
  /// `--binary` an earlier one ran.
  var executablePath: String
  var upgrades: Int
  var hangCheckUnavailable: String?

  struct ConfigurationRecord: Codable {
    var supervisor: SupervisorSettings
    var mounts: [MountSpec]
    var files: [String]
    var dropInsWithoutMounts: [String]

    init(_ configuration: Configuration) {
      supervisor = configuration.supervisor
      mounts = configuration.mounts
      files = configuration.files
      dropInsWithoutMounts = configuration.dropInsWithoutMounts
    }

    var configuration: Configuration {
      Configuration(
        supervisor: supervisor, mounts: mounts, files: files,
        dropInsWithoutMounts: dropInsWithoutMounts)
    }
  }

  /// A worker with the numbers of its descriptors.
  struct WorkerRecord: Codable {
    var id: WorkerID
    var mount: String
    var pid: pid_t
    var pidfd: Int32
    var messages: Int32?
    var output: Int32?
    var notifySocket: Int32?
    var notifyAddress: String?
    var mountpoint: String
    var baseline: Set<UInt64>
    var mountID: UInt64?
    var lines: LineSplitter
  }

  struct MountSiteRecord: Codable {
    var mountpoint: String
    var baseline: Set<UInt64>
  }

  struct ControlRecord: Codable {
    var listener: Int32
    var path: String
    var ownFileDevice: UInt64?
    var ownFileInode: UInt64?
    /// The `mountctl upgrade` that asked: the new binary answers it.
    var requester: Int32?
  }

  /// Every descriptor the records name, which must survive the exec.
  var descriptors: [Int32] {
    let ofWorkers = (workers + orphanedOutputs).flatMap {
      [$0.pidfd, $0.messages, $0.output, $0.notifySocket].compactMap { $0 }
    }
    return ofWorkers + [control.listener] + [control.requester].compactMap { $0 }
  }

  /// Writes the state into a new memfd (kept open across exec) and returns it.
  func write() throws(RuntimeError) -> Descriptor {
    let data: Data
    do {
      data = try JSONEncoder().encode(self)
    } catch {
      throw RuntimeError(.io, "cannot encode the state for the upgrade: \(error)")
    }
    let fd = Descriptor(
      try system(.descriptors, "memfd_create") { mountsup_memfd("mountsupd-upgrade") })
    let bytes = [UInt8](data)
    var offset = 0
    while offset < bytes.count {
      offset += try system(.io, "write the upgrade state") {
        bytes.withUnsafeBytes { Glibc.write(fd.raw, $0.baseAddress! + offset, $0.count - offset) }
      }
    }
    return fd
  }

  /// Reads the state the old binary left in the memfd `fd` (and closes it).
  static func read(from fd: Int32) throws(RuntimeError) -> UpgradeState {
    let descriptor = Descriptor(fd)
    var data = Data()
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    var offset: Int = 0
    while true {
      let count = try system(.io, "read the upgrade state") {
        pread(descriptor.raw, &buffer, buffer.count, off_t(offset))
      }
      if count == 0 { break }
      data.append(contentsOf: buffer[..<count])
      offset += count
    }
    struct Header: Decodable { var format: Int }
    guard let header = try? JSONDecoder().decode(Header.self, from: data) else {
      throw RuntimeError(.io, "the upgrade state is not readable")
    }
    guard header.format == format else {
      throw RuntimeError(
        .io, "the upgrade state has format \(header.format); this build reads format \(format)")
    }
    do {
      return try JSONDecoder().decode(UpgradeState.self, from: data)
    } catch {
      throw RuntimeError(.io, "the upgrade state cannot be decoded: \(error)")
    }
  }
}
