import Glibc

/// Resolves a mountpoint to the path the kernel will show for it in `/proc/self/mountinfo`.
///
/// A mount made at `/srv/r/link/x`, where `link` is a symlink to `real`, appears at
/// `/srv/r/real/x`: the supervisor, watching the written path, would never see it confirmed (and
/// two mounts written through different symlinks would stack on one directory). So the part of
/// the path that exists is resolved through its symlinks, like `realpath(3)`; the part that does not
/// exist yet (the supervisor creates it) is kept as written.
///
/// The walk never looks inside a FUSE mount: it stops at any mountpoint of one (from mountinfo) and
/// keeps the rest as written, because a hung FUSE daemon blocks whoever touches its files, and the
/// configuration is read on the supervisor's event loop at a reload.
struct MountpointResolver {
  /// Mountpoints of FUSE mounts (`fuse`, `fuse.*`, `fuseblk`), as mountinfo shows them.
  var fuseMountpoints: Set<String>

  /// Directories already found real (not symlinks) in this load: a thousand mounts under one
  /// parent look at each of its components once, not a thousand times.
  private let knownDirectories = KnownDirectories()

  /// The most symlinks followed for one path, as the kernel allows (`ELOOP` beyond).
  static let maximumSymlinks = 40

  enum Problem: Error, Equatable {
    /// More than ``maximumSymlinks`` symlinks: a loop.
    case symlinkLoop
    /// `path` (the whole resolved mountpoint when `isMountpoint`, else a directory it lies under)
    /// exists but is `kind` ("a regular file"), not a directory.
    case notADirectory(path: String, kind: String, isMountpoint: Bool)
  }

  /// `path` is absolute and normalised (no `.`, `..` or empty components).
  func resolve(_ path: String) -> Result<String, Problem> {
    var resolved: [Substring] = []
    var pending = ArraySlice(path.split(separator: "/"))
    var symlinks = 0
    func joined(_ components: [Substring]) -> String {
      "/" + components.joined(separator: "/")
    }
    func keepingTheRest(_ candidate: [Substring]) -> String {
      // The rest may hold `..` from a symlink's target; resolved lexically, as nothing of it
      // exists (or may be looked at) to say otherwise.
      var result = candidate
      for component in pending where component != "." {
        if component == ".." {
          _ = result.popLast()
        } else {
          result.append(component)
        }
      }
      return joined(result)
    }

    while let component = pending.popFirst() {
      if component == "." { continue }
      if component == ".." {
        _ = resolved.popLast()
        continue
      }
      let candidate = resolved + [component]
      let candidatePath = joined(candidate)
      if fuseMountpoints.contains(candidatePath) { return .success(keepingTheRest(candidate)) }
      if knownDirectories.paths.contains(candidatePath) {
        resolved = candidate
        continue
      }
      var info = stat()
      guard lstat(candidatePath, &info) == 0 else {
        // ENOENT: created later. Anything else (EACCES on another user's mount): not ours to
        // resolve; the supervisor meets the same error when it prepares the mountpoint.
        return .success(keepingTheRest(candidate))
      }
      switch info.st_mode & S_IFMT {
      case S_IFDIR:
        resolved = candidate
        knownDirectories.paths.insert(candidatePath)
      case S_IFLNK:
        symlinks += 1
        guard symlinks <= Self.maximumSymlinks, let target = symlinkTarget(candidatePath)
        else {
          return symlinks > Self.maximumSymlinks
            ? .failure(.symlinkLoop) : .success(keepingTheRest(candidate))
        }
        if target.hasPrefix("/") { resolved = [] }
        pending = ArraySlice(target.split(separator: "/")) + pending
      default:
        let kind = SystemAccess.nonRegularKind(info.st_mode) ?? "a regular file"
        return .failure(
          .notADirectory(path: candidatePath, kind: kind, isMountpoint: pending.isEmpty))
      }
    }
    return .success(joined(resolved))
  }
}

/// The resolver's memory of real directories, shared by its copies.
private final class KnownDirectories {
  var paths: Set<String> = []
}
