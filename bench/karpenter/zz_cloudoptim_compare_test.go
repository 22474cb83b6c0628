//go:build test_performance

// Added to a private copy of sigs.k8s.io/karpenter by CloudOptim's bench/karpenter-compare.sh (package
// pkg/controllers/provisioning/scheduling). Two entry points, both driven by environment variables so
// that `go test` runs nothing else:
//
//   - TestCloudOptimDump (CLOUDOPTIM_DUMP=<file>, CLOUDOPTIM_PODS=<n>): writes Karpenter's own benchmark
//     input as JSON: makeDiversePods(n) drawn from this package's generator (seed 42, in a fresh process,
//     exactly the pods BenchmarkScheduling<n> uses) and fake.InstanceTypes(400) (capacity, overhead, pod
//     caps, offerings with zone, capacity type and price). CloudOptim's packer reads the same file.
//   - TestCloudOptimCompare (CLOUDOPTIM_INPUT=<file>, CLOUDOPTIM_WARM=<n>): reads that file back, builds
//     the pods with test.Pod and the types with fake.NewInstanceType (the same options the benchmark
//     uses), and times Scheduler.Solve exactly as benchmarkScheduler does (scheduler and topology built
//     before the timer): one cold Solve (the first in this process) and n warm ones, each on a freshly
//     built scheduler. Prints one line per Solve:
//     `compare side=karpenter run=cold|warm seconds=S pods=P nodes=N cost=C`
//     where cost is the sum over new NodeClaims of the cheapest available offering compatible with the
//     NodeClaim's requirements among its remaining instance type options (what a launch would pay).

package scheduling_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	fakecr "sigs.k8s.io/controller-runtime/pkg/client/fake"

	v1 "sigs.k8s.io/karpenter/pkg/apis/v1"
	"sigs.k8s.io/karpenter/pkg/cloudprovider"
	"sigs.k8s.io/karpenter/pkg/cloudprovider/fake"
	"sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling"
	"sigs.k8s.io/karpenter/pkg/controllers/state"
	"sigs.k8s.io/karpenter/pkg/events"
	"sigs.k8s.io/karpenter/pkg/operator/injection"
	"sigs.k8s.io/karpenter/pkg/operator/options"
	karpsched "sigs.k8s.io/karpenter/pkg/scheduling"
	"sigs.k8s.io/karpenter/pkg/test"
)

type coTerm struct {
	Key         string            `json:"key"` // "zone" or "hostname"
	MaxSkew     int32             `json:"max_skew,omitempty"`
	MatchLabels map[string]string `json:"match_labels"`
}

type coPod struct {
	CPUMillis    int64             `json:"cpu_millis"`
	MemoryBytes  int64             `json:"memory_bytes"`
	Labels       map[string]string `json:"labels"`
	Spread       []coTerm          `json:"spread"`
	Affinity     []coTerm          `json:"affinity"`
	AntiAffinity []coTerm          `json:"anti_affinity"`
}

type coOffering struct {
	Zone         string  `json:"zone"`
	CapacityType string  `json:"capacity_type"`
	Price        float64 `json:"price"`
	Available    bool    `json:"available"`
}

type coType struct {
	Name           string       `json:"name"`
	CPUMillis      int64        `json:"cpu_millis"`
	MemoryBytes    int64        `json:"memory_bytes"`
	Pods           int64        `json:"pods"`
	OverheadCPU    int64        `json:"overhead_cpu_millis"`
	OverheadMemory int64        `json:"overhead_memory_bytes"`
	Offerings      []coOffering `json:"offerings"`
}

type coInput struct {
	Source string   `json:"source"`
	Zones  []string `json:"zones"`
	Types  []coType `json:"types"`
	Pods   []coPod  `json:"pods"`
}

func coKey(key string) string {
	switch key {
	case corev1.LabelTopologyZone:
		return "zone"
	case corev1.LabelHostname:
		return "hostname"
	}
	panic("unexpected topology key " + key)
}

func coTopologyKey(key string) string {
	if key == "zone" {
		return corev1.LabelTopologyZone
	}
	return corev1.LabelHostname
}

func TestCloudOptimDump(t *testing.T) {
	path := os.Getenv("CLOUDOPTIM_DUMP")
	if path == "" {
		t.Skip("CLOUDOPTIM_DUMP not set")
	}
	count, err := strconv.Atoi(os.Getenv("CLOUDOPTIM_PODS"))
	if err != nil {
		t.Fatalf("CLOUDOPTIM_PODS: %s", err)
	}
	in := coInput{Source: fmt.Sprintf("karpenter makeDiversePods(%d) (seed 42, fresh process), fake.InstanceTypes(400)", count)}
	zones := map[string]bool{}
	for _, it := range fake.InstanceTypes(400) {
		overhead := it.Overhead.Total()
		ct := coType{
			Name:           it.Name,
			CPUMillis:      it.Capacity.Cpu().MilliValue(),
			MemoryBytes:    it.Capacity.Memory().Value(),
			Pods:           it.Capacity.Pods().Value(),
			OverheadCPU:    overhead.Cpu().MilliValue(),
			OverheadMemory: overhead.Memory().Value(),
		}
		for _, o := range it.Offerings {
			zone := o.Requirements.Get(corev1.LabelTopologyZone).Any()
			if !zones[zone] {
				zones[zone] = true
				in.Zones = append(in.Zones, zone)
			}
			ct.Offerings = append(ct.Offerings, coOffering{
				Zone:         zone,
				CapacityType: o.Requirements.Get(v1.CapacityTypeLabelKey).Any(),
				Price:        o.Price,
				Available:    o.Available,
			})
		}
		in.Types = append(in.Types, ct)
	}
	for _, p := range makeDiversePods(count) {
		requests := p.Spec.Containers[0].Resources.Requests
		cp := coPod{
			CPUMillis:   requests.Cpu().MilliValue(),
			MemoryBytes: requests.Memory().Value(),
			Labels:      p.Labels,
		}
		for _, s := range p.Spec.TopologySpreadConstraints {
			cp.Spread = append(cp.Spread, coTerm{Key: coKey(s.TopologyKey), MaxSkew: s.MaxSkew, MatchLabels: s.LabelSelector.MatchLabels})
		}
		if a := p.Spec.Affinity; a != nil {
			if a.PodAffinity != nil {
				for _, term := range a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
					cp.Affinity = append(cp.Affinity, coTerm{Key: coKey(term.TopologyKey), MatchLabels: term.LabelSelector.MatchLabels})
				}
			}
			if a.PodAntiAffinity != nil {
				for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
					cp.AntiAffinity = append(cp.AntiAffinity, coTerm{Key: coKey(term.TopologyKey), MatchLabels: term.LabelSelector.MatchLabels})
				}
			}
		}
		in.Pods = append(in.Pods, cp)
	}
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func coTerms(terms []coTerm) []corev1.PodAffinityTerm {
	var out []corev1.PodAffinityTerm
	for _, term := range terms {
		out = append(out, corev1.PodAffinityTerm{
			LabelSelector: &metav1.LabelSelector{MatchLabels: term.MatchLabels},
			TopologyKey:   coTopologyKey(term.Key),
		})
	}
	return out
}

func coRead(t *testing.T, path string) ([]*corev1.Pod, []*cloudprovider.InstanceType) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in coInput
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatal(err)
	}
	var types []*cloudprovider.InstanceType
	for _, ct := range in.Types {
		var offerings []cloudprovider.Offering
		for _, o := range ct.Offerings {
			offerings = append(offerings, cloudprovider.Offering{
				Available: o.Available,
				Requirements: karpsched.NewLabelRequirements(map[string]string{
					v1.CapacityTypeLabelKey:  o.CapacityType,
					corev1.LabelTopologyZone: o.Zone,
				}),
				Price: o.Price,
			})
		}
		it := fake.NewInstanceType(ct.Name,
			fake.WithResources(corev1.ResourceList{
				corev1.ResourceCPU:    *resource.NewMilliQuantity(ct.CPUMillis, resource.DecimalSI),
				corev1.ResourceMemory: *resource.NewQuantity(ct.MemoryBytes, resource.BinarySI),
				corev1.ResourcePods:   *resource.NewQuantity(ct.Pods, resource.DecimalSI),
			}),
			fake.WithOfferings(offerings...),
		)
		it.Overhead = &cloudprovider.InstanceTypeOverhead{KubeReserved: corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewMilliQuantity(ct.OverheadCPU, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(ct.OverheadMemory, resource.BinarySI),
		}}
		types = append(types, it)
	}
	var pods []*corev1.Pod
	for _, cp := range in.Pods {
		var spread []corev1.TopologySpreadConstraint
		for _, s := range cp.Spread {
			spread = append(spread, corev1.TopologySpreadConstraint{
				MaxSkew:           s.MaxSkew,
				TopologyKey:       coTopologyKey(s.Key),
				WhenUnsatisfiable: corev1.DoNotSchedule,
				LabelSelector:     &metav1.LabelSelector{MatchLabels: s.MatchLabels},
			})
		}
		pods = append(pods, test.Pod(test.PodOptions{
			ObjectMeta: metav1.ObjectMeta{
				Labels: cp.Labels,
				UID:    uuid.NewUUID(),
			},
			PodRequirements:           coTerms(cp.Affinity),
			PodAntiRequirements:       coTerms(cp.AntiAffinity),
			TopologySpreadConstraints: spread,
			ResourceRequirements: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{
					corev1.ResourceCPU:    *resource.NewMilliQuantity(cp.CPUMillis, resource.DecimalSI),
					corev1.ResourceMemory: *resource.NewQuantity(cp.MemoryBytes, resource.BinarySI),
				},
			},
		}))
	}
	return pods, types
}

// coScheduler is setupScheduler with the instance types given instead of fake.InstanceTypes(400).
func coScheduler(ctx context.Context, pods []*corev1.Pod, instanceTypes []*cloudprovider.InstanceType) (*scheduling.Scheduler, error) {
	nodePool := test.NodePool(v1.NodePool{
		Spec: v1.NodePoolSpec{
			Limits: v1.Limits{
				corev1.ResourceCPU:    resource.MustParse("10000000"),
				corev1.ResourceMemory: resource.MustParse("10000000Gi"),
			},
		},
	})
	opts := []scheduling.Options{scheduling.NumConcurrentReconciles(5)}
	cloudProvider = fake.NewCloudProvider()
	cloudProvider.InstanceTypes = instanceTypes
	client := fakecr.NewFakeClient()
	clk := &clock.RealClock{}
	cluster = state.NewCluster(clk, client, cloudProvider)
	byPool := map[string][]*cloudprovider.InstanceType{nodePool.Name: instanceTypes}
	topology, err := scheduling.NewTopology(ctx, client, cluster, nil, []*v1.NodePool{nodePool}, byPool, pods, opts...)
	if err != nil {
		return nil, fmt.Errorf("creating topology, %w", err)
	}
	return scheduling.NewScheduler(ctx, client, []*v1.NodePool{nodePool}, cluster, nil, topology, byPool, nil,
		events.NewRecorder(&record.FakeRecorder{}), clk, nil, nil, opts...), nil
}

func TestCloudOptimCompare(t *testing.T) {
	path := os.Getenv("CLOUDOPTIM_INPUT")
	if path == "" {
		t.Skip("CLOUDOPTIM_INPUT not set")
	}
	warm, err := strconv.Atoi(os.Getenv("CLOUDOPTIM_WARM"))
	if err != nil {
		t.Fatalf("CLOUDOPTIM_WARM: %s", err)
	}
	pods, types := coRead(t, path)
	for run := 0; run <= warm; run++ {
		ctx = options.ToContext(injection.WithControllerName(context.Background(), "provisioner"), test.Options())
		scheduler, err := coScheduler(ctx, pods, types)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		results, err := scheduler.Solve(ctx, pods)
		elapsed := time.Since(start)
		if err != nil {
			t.Fatalf("Solve: %s", err)
		}
		if len(results.PodErrors) > 0 {
			t.Fatalf("%d pods did not schedule", len(results.PodErrors))
		}
		placed, cost := 0, 0.0
		for _, nc := range results.NewNodeClaims {
			placed += len(nc.Pods)
			cheapest := math.Inf(1)
			for _, it := range nc.InstanceTypeOptions {
				if offerings := it.Offerings.Available().Compatible(nc.Requirements); len(offerings) > 0 {
					cheapest = math.Min(cheapest, offerings.Cheapest().Price)
				}
			}
			cost += cheapest
		}
		kind := "warm"
		if run == 0 {
			kind = "cold"
		}
		fmt.Printf("compare side=karpenter run=%s seconds=%.6f pods=%d nodes=%d cost=%.4f\n",
			kind, elapsed.Seconds(), placed, len(results.NewNodeClaims), cost)
	}
}
