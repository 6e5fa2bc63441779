//! Confidence filtering on the device: the head output `[batch, 4 + nc, anchors]` is reduced
//! to each anchor's best class and score, the anchors above a floor are packed to the front
//! (a prefix sum gives each survivor its column, a scatter moves it there), and only that
//! prefix is read back. On a GPU a frame then moves a few hundred columns of 6 values instead
//! of 8400 columns of 84.

use burn::tensor::{IndexingUpdateOp, Tensor, TensorData, Transaction, s};

/// Values kept per surviving anchor: `cx, cy, w, h`, best score, best class.
pub const ROWS: usize = 6;

/// Columns read back on the first try when nothing better is known.
pub const INITIAL_CAPACITY: usize = 1024;

/// The surviving anchors of each image of a batch, in anchor order.
#[derive(Debug, Clone)]
pub struct Survivors {
    /// `[batch, ROWS, capacity]`, row-major.
    data: Vec<f32>,
    capacity: usize,
    counts: Vec<usize>,
}

impl Survivors {
    /// Image `b`: its `[ROWS, capacity]` block and how many leading columns are survivors.
    pub fn image(&self, b: usize) -> (&[f32], usize) {
        let size = ROWS * self.capacity;
        (&self.data[b * size..(b + 1) * size], self.counts[b])
    }

    /// Columns per row of [`Survivors::image`]'s block.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A read-back capacity for the next batch: twice this batch's largest count, so a
    /// steady scene needs one read per batch.
    pub fn next_capacity(&self) -> usize {
        let largest = self.counts.iter().copied().max().unwrap_or(0);
        (2 * largest).next_power_of_two().max(INITIAL_CAPACITY / 4)
    }
}

/// Reads back the anchors of `output` whose best class score is above `floor`, trying
/// `capacity` columns first and reading again only if an image has more survivors.
pub fn read_survivors(output: Tensor<3>, floor: f32, capacity: usize) -> Survivors {
    let [batch, channels, anchors] = output.dims();
    let (best, class) = output
        .clone()
        .slice(s![.., 4..channels, ..])
        .max_dim_with_indices(1);
    let keep = best.clone().greater_elem(floor);
    let kept = keep.clone().float();
    // Survivor k goes to column k; the others all go to the extra column `anchors`.
    let column = (kept.clone().cumsum(2) - 1.0)
        .mask_fill(keep.bool_not(), anchors as f32)
        .int()
        .expand([batch, ROWS, anchors]);
    let rows = Tensor::cat(vec![output.slice(s![.., 0..4, ..]), best, class.float()], 1);
    let packed = Tensor::<3>::zeros([batch, ROWS, anchors + 1], &rows.device()).scatter(
        2,
        column,
        rows,
        IndexingUpdateOp::Assign,
    );
    let capacity = capacity.clamp(1, anchors);
    let mut read = Transaction::default()
        .register(packed.clone().slice(s![.., .., 0..capacity]))
        .register(kept.sum_dim(2))
        .execute()
        .into_iter()
        .map(floats);
    let (mut data, counts) = (read.next().expect("packed"), read.next().expect("counts"));
    let counts: Vec<usize> = counts.into_iter().map(|c| c as usize).collect();
    let largest = counts.iter().copied().max().unwrap_or(0);
    if largest <= capacity {
        return Survivors {
            data,
            capacity,
            counts,
        };
    }
    data = floats(packed.slice(s![.., .., 0..largest]).into_data());
    Survivors {
        data,
        capacity: largest,
        counts,
    }
}

fn floats(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data")
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;

    /// Two images, three classes, five anchors.
    fn output() -> Tensor<3> {
        let mut values = Vec::new();
        for image in 0..2 {
            for row in 0..4 {
                values.extend((0..5).map(|a| (100 * image + 10 * row + a) as f32));
            }
            // Image 0: anchors 1 and 3 survive a 0.5 floor; image 1: anchors 0, 2, 3, 4.
            let scores: [[f32; 5]; 3] = if image == 0 {
                [
                    [0.1, 0.2, 0.3, 0.9, 0.0],
                    [0.4, 0.7, 0.1, 0.1, 0.5],
                    [0.0; 5],
                ]
            } else {
                [
                    [0.6, 0.1, 0.0, 0.0, 0.0],
                    [0.0; 5],
                    [0.2, 0.3, 0.8, 0.55, 0.51],
                ]
            };
            values.extend(scores.iter().flatten());
        }
        Tensor::from_data(TensorData::new(values, [2, 7, 5]), &Device::flex())
    }

    /// The survivors of image `b` as `(anchor box x, score, class)`.
    fn columns(s: &Survivors, b: usize) -> Vec<(f32, f32, f32)> {
        let (block, count) = s.image(b);
        let cap = s.capacity();
        (0..count)
            .map(|k| (block[k], block[4 * cap + k], block[5 * cap + k]))
            .collect()
    }

    #[test]
    fn survivors_are_packed_in_anchor_order_with_best_class() {
        let s = read_survivors(output(), 0.5, 8);
        assert_eq!(columns(&s, 0), vec![(1.0, 0.7, 1.0), (3.0, 0.9, 0.0)]);
        assert_eq!(
            columns(&s, 1),
            vec![
                (100.0, 0.6, 0.0),
                (102.0, 0.8, 2.0),
                (103.0, 0.55, 2.0),
                (104.0, 0.51, 2.0)
            ]
        );
        // The box rows come along: image 1, anchor 2, row h = 100 + 30 + 2.
        let (block, _) = s.image(1);
        assert_eq!(block[3 * s.capacity() + 1], 132.0);
    }

    #[test]
    fn a_small_first_read_is_followed_by_a_full_one() {
        let s = read_survivors(output(), 0.5, 2);
        assert_eq!(s.capacity(), 4);
        assert_eq!(columns(&s, 1).len(), 4);
        assert_eq!(columns(&s, 0).len(), 2);
        assert_eq!(s.next_capacity(), INITIAL_CAPACITY / 4);
    }
}
