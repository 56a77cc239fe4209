/// chatbatch's version, as `--version` and the User-Agent say it.
public enum ChatBatchVersion {
    public static let current = "0.3.0"
}
