/// The commit this binary was built from. scripts/package rewrites this file in its own copy of
/// the tree with `git rev-parse --short HEAD`; a plain `swift build` keeps "unknown", so building
/// never needs git (a tarball, a CI cache) and the committed tree never changes.
enum BuildCommit {
    static let id = "unknown"
}
