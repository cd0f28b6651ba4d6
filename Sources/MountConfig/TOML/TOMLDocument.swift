/// A parsed TOML document (TOML 1.0): what the configuration loader reads.
///
/// The parser is the project's own rather than a binding of a C++ library: that binding brought
/// all of Foundation and its ICU data (34 MB) into `mountsupd`, which cost every start more than a
/// millisecond before `main`, and handed strings over as C strings, cutting a `\u0000` escape short.
/// Here a string holds exactly what was written, NULs included, for validation to reject.
final class TOMLTable: Sequence {
  private var values: [String: TOMLValue] = [:]
  private var order: [String] = []
  private var isSorted = true

  init() {}

  /// The keys in byte order (as the C++ library kept them), so that messages and mounts come in
  /// one stable order whatever the order written.
  var keys: [String] {
    if !isSorted {
      order.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      isSorted = true
    }
    return order
  }

  subscript(key: String) -> TOMLValue? { values[key] }

  func contains(key: String) -> Bool { values[key] != nil }

  /// Sets a key; a new one joins the keys.
  func set(_ key: String, _ value: TOMLValue) {
    if values.updateValue(value, forKey: key) == nil {
      order.append(key)
      isSorted = false
    }
  }

  func makeIterator() -> IndexingIterator<[(key: String, value: TOMLValue)]> {
    keys.map { (key: $0, value: values[$0]!) }.makeIterator()
  }
}

/// One TOML value. Dates and times are kept as written: no setting takes one, but a message must
/// still name the type found.
enum TOMLValue {
  case string(String)
  case integer(Int)
  case float(Double)
  case boolean(Bool)
  case dateTime(String)
  case date(String)
  case time(String)
  case array([TOMLValue])
  case table(TOMLTable)

  var string: String? { if case .string(let value) = self { value } else { nil } }
  var int: Int? { if case .integer(let value) = self { value } else { nil } }
  var bool: Bool? { if case .boolean(let value) = self { value } else { nil } }
  var array: [TOMLValue]? { if case .array(let value) = self { value } else { nil } }
  var table: TOMLTable? { if case .table(let value) = self { value } else { nil } }

  var type: TOMLType {
    switch self {
    case .string: .string
    case .integer: .int
    case .float: .double
    case .boolean: .bool
    case .dateTime: .dateTime
    case .date: .date
    case .time: .time
    case .array: .array
    case .table: .table
    }
  }
}

/// The type of a value, for "expected a string, found an integer".
enum TOMLType {
  case table, array, string, int, double, bool, date, time, dateTime
}

/// Why a text is not TOML, and where (1-based; the column counts characters).
struct TOMLSyntaxError: Error, CustomStringConvertible {
  var line: Int
  var column: Int
  var message: String

  var description: String { message }
}
