import ArgumentParser
import FoundationEssentials
import Glibc
import MountControl
import MountDuration

struct WaitReady: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "wait-ready",
    abstract: "Wait until mounts are confirmed ready: the barrier before using them.",
    discussion: """
      Without names, waits for every configured mount that is not stopped by an operator, \
      optional ones (required = false) included: stricter than the service's READY=1, which \
      waits only for required mounts. Name the mounts to wait for only some. Exits 0 when all \
      are ready, 1 as soon as one has failed (or was stopped or removed), 3 when the timeout ran \
      out first. Without --timeout it waits until one or the other.

      Examples:
        mountctl wait-ready
        mountctl wait-ready photos --timeout 30s
      """)

  @OptionGroup var connection: Connection

  @Argument(help: "Mounts to wait for; all when none are named.", completion: mountNameCompletion)
  var names: [String] = []

  @Option(
    name: .long, help: "Give up after this long, e.g. 500ms, 30s, 2m; a plain number is seconds.")
  var timeout: String?

  func validate() throws {
    if let timeout, parseCommandLineDuration(timeout) == nil {
      throw ValidationError(
        "invalid --timeout \"\(timeout)\": use e.g. 500ms, 30s, 2m, 1m30s, or 5 for 5 seconds")
    }
  }

  func run() throws {
    let limit = timeout.flatMap(parseCommandLineDuration)
    let request = ControlRequest(
      .waitReady, names: names,
      timeoutMilliseconds: limit.map {
        $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000
      })
    let response: ControlResponse
    do {
      // The daemon answers at the timeout; the client's own limit only guards against a hung daemon.
      response = try connection.request(request, timeout: limit.map { $0 + .seconds(10) })
    } catch {
      throw failure(error)
    }
    if response.ok {
      print("ready: \((response.mounts ?? []).map(\.name).joined(separator: ", "))")
      return
    }
    printError("mountctl: \(response.error?.message ?? "no reason given")")
    throw response.error?.code == .timeout ? Exit.notReady : exitStatus(forRefusal: response.error)
  }
}
