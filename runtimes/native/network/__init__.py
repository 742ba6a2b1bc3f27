"""Pod networking of the native runtime: CNI plugins and the files of a sandbox."""
