use amoskys_schemas::Summary;

/// Count, min, max, mean and sum of squared deviations of a series (Welford), with
/// an exact merge (Chan et al.) so that pane accumulators combine into windows.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Moments {
    pub n: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    #[inline]
    pub fn push(&mut self, x: f64) {
        if self.n == 0 {
            self.min = x;
            self.max = x;
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.m2 += o.m2 + d * d * (self.n as f64) * (o.n as f64) / n as f64;
        self.mean += d * o.n as f64 / n as f64;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.n = n;
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            (self.m2 / self.n as f64).max(0.0).sqrt()
        }
    }

    pub fn get_min(&self) -> Option<f64> {
        (self.n > 0).then_some(self.min)
    }
    pub fn get_max(&self) -> Option<f64> {
        (self.n > 0).then_some(self.max)
    }
    pub fn get_mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }
    pub fn get_std(&self) -> Option<f64> {
        (self.n > 0).then(|| self.std())
    }

    pub fn summary(&self) -> Summary {
        Summary {
            n: self.n,
            min: self.min,
            max: self.max,
            mean: self.mean,
            std: self.std(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_pushing_everything() {
        let xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0];
        let mut all = Moments::default();
        xs.iter().for_each(|&x| all.push(x));
        let (mut a, mut b) = (Moments::default(), Moments::default());
        xs[..3].iter().for_each(|&x| a.push(x));
        xs[3..].iter().for_each(|&x| b.push(x));
        a.merge(&b);
        assert_eq!(a.n, all.n);
        assert!((a.mean - all.mean).abs() < 1e-12);
        assert!((a.std() - all.std()).abs() < 1e-12);
        let mean = xs.iter().sum::<f64>() / 8.0;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 8.0;
        assert!((all.std() - var.sqrt()).abs() < 1e-12);
        assert_eq!((a.min, a.max), (1.0, 9.0));
    }
}
