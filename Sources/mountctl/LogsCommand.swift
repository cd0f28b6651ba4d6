import ArgumentParser
import FoundationEssentials
import Glibc
import MountControl
import MountDuration

struct Logs: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a mount's captured worker output (stdout and stderr, the last 200 lines).",
    discussion: """
      Examples:
        mountctl logs photos
        mountctl logs photos -n 20
        mountctl logs photos -f
      """)

  @OptionGroup var connection: Connection

  @Argument(help: "The mount.", completion: mountNameCompletion)
  var name: String

  @Option(name: [.customShort("n"), .long], help: "Show only the last N lines.")
  var lines: Int?

  @Flag(name: .shortAndLong, help: "Keep printing new lines as the worker writes them.")
  var follow = false

  func validate() throws {
    if let lines, lines < 0 { throw ValidationError("-n must not be negative") }
  }

  func run() throws {
    do {
      let client = try connection.connect()
      var response = try client.request(
        ControlRequest(.logs, names: [name], lines: lines, follow: follow), timeout: .seconds(10))
      while true {
        guard response.ok else {
          printError("mountctl: \(response.error?.message ?? "no reason given")")
          throw exitStatus(forRefusal: response.error)
        }
        for line in response.lines ?? [] { print(visible(line)) }
        fflush(nil)
        guard response.more == true else { return }
        response = try client.receive(timeout: nil)
      }
    } catch let error as ControlClientError {
      throw failure(error)
    }
  }
}

/// A worker's line with its control characters made visible (ESC as `^[`, DEL as `^?`): a
/// worker's output must not drive the operator's terminal (escape sequences can rewrite the
/// screen, set the title or worse). Tabs stay.
func visible(_ line: String) -> String {
  guard line.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F })
  else { return line }
  var text = ""
  for scalar in line.unicodeScalars {
    switch scalar.value {
    case 0x09: text.unicodeScalars.append(scalar)
    case 0..<0x20: text += "^" + String(UnicodeScalar(UInt8(scalar.value) + 0x40))
    case 0x7F: text += "^?"
    default: text.unicodeScalars.append(scalar)
    }
  }
  return text
}
