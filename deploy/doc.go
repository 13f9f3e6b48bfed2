// Package deploy holds sluice's deployment manifests; its test keeps them in step with the code.
//
// The manifests are docker-compose.yml (the whole stack on one machine) and
// the kustomizations under k8s/ (see README.md). `go test ./deploy` decodes
// every one of them strictly and checks the SLUICE_* names and values, the
// probes, the grace periods, the autoscaler bounds and the dashboard's
// metric names against internal/config, internal/mockapi and the metric
// contract.
package deploy
