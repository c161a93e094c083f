package broker

// SetClusterRand makes c draw ETIDs from f (tests).
func SetClusterRand(c *Cluster, f func() uint32) { c.randID = f }
