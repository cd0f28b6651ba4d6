import Foundation
import PackagePlugin

/// Writes the git commit the package is built from into `BuildIdentity.swift` of the target, so
/// that `mountsupd --version`, `mountctl --version` and an upgrade's log name the exact build:
/// the whole hash, then " modified" when tracked files differed from it; "unknown" outside a
/// git checkout. The command runs again whenever git's HEAD, its log or its index change (a
/// commit, a checkout, a change staged or seen by `git status`).
@main struct BuildIdentity: BuildToolPlugin {
  func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
    let output = context.pluginWorkDirectoryURL.appending(path: "BuildIdentity.swift")
    let package = context.package.directoryURL
    let script = """
      commit=$(git -C "$1" rev-parse HEAD 2>/dev/null) || commit=unknown
      if [ "$commit" != unknown ] && [ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit modified"
      fi
      printf '/// The git commit of this build (see Plugins/BuildIdentity).\\nlet buildCommit = "%s"\\n' "$commit" > "$2"
      """
    return [
      .buildCommand(
        displayName: "Build identity: the git commit", executable: URL(filePath: "/bin/sh"),
        arguments: ["-c", script, "sh", package.path, output.path],
        inputFiles: Self.gitFiles(of: package), outputFiles: [output])
    ]
  }

  /// The files of the checkout's git directory that change with its commit or its index; none
  /// outside a checkout. In a worktree `.git` is a file naming the real directory.
  static func gitFiles(of package: URL) -> [URL] {
    let dotGit = package.appending(path: ".git")
    var directory = dotGit
    if let text = try? String(contentsOf: dotGit, encoding: .utf8), text.hasPrefix("gitdir: ") {
      let path = text.dropFirst("gitdir: ".count).trimmingCharacters(in: .whitespacesAndNewlines)
      directory = URL(filePath: path, relativeTo: package)
    }
    return ["HEAD", "index", "logs/HEAD"].map { directory.appending(path: $0) }.filter {
      FileManager.default.fileExists(atPath: $0.path)
    }
  }
}
