//! One single-threaded matrix product over strided views, through the `gemm` crate's packed,
//! runtime-dispatched kernels (the parallelism lives in the callers' tiles).

/// A matrix in memory: element `(row, col)` at `ptr + row * row_stride + col * col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// `dst[m x n] = lhs[m x k] * rhs[k x n]`, or `dst += ...` when `accumulate`.
///
/// # Safety
/// Every view must address valid memory for its shape (`dst`: `m x n`, writable and not
/// aliased by the inputs; `lhs`: `m x k`; `rhs`: `k x n`).
pub(crate) unsafe fn multiply(
    [m, n, k]: [usize; 3],
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride,
            dst.row_stride,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
