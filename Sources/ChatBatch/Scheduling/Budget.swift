/// What a run may still spend: the cap, what is spent, and the worst case of what is in flight.
struct Budget {
    var cap: Double?
    var spent: Double
    var inflightWorst = 0.0

    /// True when sending one more request whose worst case is `worst` keeps the total within the cap.
    func allows(_ worst: Double) -> Bool {
        guard let cap else { return true }
        return spent + inflightWorst + worst <= cap + 1e-12
    }
}
