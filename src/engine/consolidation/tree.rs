//! A max segment tree over destinations: "the first destination at or after position `start` with at
//! least this much free CPU and memory" in logarithmic time (typically; two independent maxima can make a
//! descent visit a few extra subtrees).

/// Free CPU (millicores) and memory (bytes) per leaf; a disabled leaf holds `i64::MIN` in both.
#[derive(Debug, Clone)]
pub(super) struct FitTree {
    size: usize,
    cpu: Vec<i64>,
    memory: Vec<i64>,
}

/// Value of a leaf that accepts nothing (dead, cordoned or full node).
pub(super) const DISABLED: (i64, i64) = (i64::MIN, i64::MIN);

impl FitTree {
    /// A tree of `len` disabled leaves.
    pub(super) fn new(len: usize) -> Self {
        let size = len.max(1).next_power_of_two();
        FitTree {
            size,
            cpu: vec![i64::MIN; 2 * size],
            memory: vec![i64::MIN; 2 * size],
        }
    }

    /// Make room for at least `len` leaves (new leaves are disabled); amortised O(1) per leaf.
    pub(super) fn ensure_len(&mut self, len: usize) {
        if len <= self.size {
            return;
        }
        let size = len.next_power_of_two();
        let mut cpu = vec![i64::MIN; 2 * size];
        let mut memory = vec![i64::MIN; 2 * size];
        cpu[size..size + self.size].copy_from_slice(&self.cpu[self.size..]);
        memory[size..size + self.size].copy_from_slice(&self.memory[self.size..]);
        for i in (1..size).rev() {
            cpu[i] = cpu[2 * i].max(cpu[2 * i + 1]);
            memory[i] = memory[2 * i].max(memory[2 * i + 1]);
        }
        *self = FitTree { size, cpu, memory };
    }

    /// Set leaf `leaf` to (free CPU, free memory).
    pub(super) fn set(&mut self, leaf: usize, (cpu, memory): (i64, i64)) {
        let mut i = leaf + self.size;
        self.cpu[i] = cpu;
        self.memory[i] = memory;
        while i > 1 {
            i /= 2;
            self.cpu[i] = self.cpu[2 * i].max(self.cpu[2 * i + 1]);
            self.memory[i] = self.memory[2 * i].max(self.memory[2 * i + 1]);
        }
    }

    /// The leftmost leaf at or after `start` whose free CPU >= `cpu` and free memory >= `memory`.
    pub(super) fn first_fit(&self, start: usize, cpu: i64, memory: i64) -> Option<usize> {
        self.descend(1, 0, self.size, start, cpu, memory)
    }

    fn descend(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        start: usize,
        cpu: i64,
        memory: i64,
    ) -> Option<usize> {
        if hi <= start || self.cpu[node] < cpu || self.memory[node] < memory {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.descend(2 * node, lo, mid, start, cpu, memory)
            .or_else(|| self.descend(2 * node + 1, mid, hi, start, cpu, memory))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_finds_the_leftmost_leaf_with_both_resources() {
        let mut tree = FitTree::new(5);
        tree.set(0, (100, 10));
        tree.set(1, (10, 100));
        tree.set(2, (50, 50));
        tree.set(3, (500, 500));
        assert_eq!(tree.first_fit(0, 50, 50), Some(2));
        assert_eq!(tree.first_fit(3, 50, 50), Some(3));
        assert_eq!(tree.first_fit(4, 0, 0), None, "leaf 4 is disabled");
        assert_eq!(tree.first_fit(0, 600, 0), None);
        tree.set(2, DISABLED);
        assert_eq!(tree.first_fit(0, 50, 50), Some(3));
    }

    #[test]
    fn growing_keeps_leaves_and_adds_disabled_ones() {
        let mut tree = FitTree::new(1);
        tree.set(0, (10, 10));
        tree.ensure_len(5);
        assert_eq!(tree.first_fit(0, 10, 10), Some(0));
        assert_eq!(tree.first_fit(1, 0, 0), None);
        tree.set(4, (20, 20));
        assert_eq!(tree.first_fit(0, 15, 15), Some(4));
    }

    #[test]
    fn zero_requests_fit_on_empty_but_not_on_overfull_leaves() {
        let mut tree = FitTree::new(2);
        tree.set(0, (-5, 10));
        tree.set(1, (0, 0));
        assert_eq!(tree.first_fit(0, 0, 0), Some(1));
    }
}
