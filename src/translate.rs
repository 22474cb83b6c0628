//! Translation of Kubernetes objects (Nodes, Pods, PodDisruptionBudgets) into the engine snapshot model.
