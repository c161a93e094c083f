package broker

import "slices"

// ClusterMaps is what a cluster node keeps per topic and client (tests).
type ClusterMaps struct {
	Interest, Watched, Clients, Watching, Live, Peers int
	InterestNames                                     []string
}

// ClusterMapSizes returns the sizes of b's cluster tables (tests).
func ClusterMapSizes(b *Broker) ClusterMaps {
	cn := b.cl
	cn.mu.Lock()
	defer cn.mu.Unlock()
	m := ClusterMaps{Interest: len(cn.interest), Watched: len(cn.watched), Clients: len(cn.clients),
		Watching: len(cn.watching), Live: len(cn.live), Peers: len(cn.peers)}
	for name := range cn.interest {
		m.InterestNames = append(m.InterestNames, name)
	}
	slices.Sort(m.InterestNames)
	return m
}
