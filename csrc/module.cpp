// pybind11 bindings only: check buffers against the geometry, release the GIL,
// call the kernel. Shapes come from convkit/_params.py; outputs are allocated
// by the Python layer and passed in.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "conv2d.h"
#include "cpu_features.h"
#include "geometry.h"
#include "parallel.h"
#include "peak.h"
#include "pool2d.h"

namespace py = pybind11;
using namespace convkit;

namespace {

[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }

// A buffer of `expected` elements of T, C-contiguous and aligned.
template <typename T>
const T* input(const py::array& a, int64_t expected, const char* fn, const char* name) {
    if (!a.dtype().is(py::dtype::of<T>()))
        type_error(std::string(fn) + ": " + name + " has the wrong dtype (" + std::string(py::str(a.dtype())) +
                   "); expected " + std::string(py::str(py::dtype::of<T>())));
    const int flags = py::array::c_style;
    if (!(a.flags() & flags) || !(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw std::invalid_argument(std::string(fn) + ": " + name + " must be C-contiguous and aligned");
    if (static_cast<int64_t>(a.size()) != expected)
        throw std::invalid_argument(std::string(fn) + ": " + name + " has " + std::to_string(a.size()) +
                                    " elements, the geometry needs " + std::to_string(expected));
    return static_cast<const T*>(a.data());
}

template <typename T>
T* output(py::array& a, int64_t expected, const char* fn, const char* name) {
    input<T>(a, expected, fn, name);
    if (!a.writeable()) throw std::invalid_argument(std::string(fn) + ": " + name + " must be writeable");
    return static_cast<T*>(a.mutable_data());
}

// An optional array argument (None or a NumPy array; nothing converted, so the
// pointer stays valid while the caller holds the object).
py::array optional_array(const py::object& obj, const char* fn, const char* name) {
    if (!py::isinstance<py::array>(obj)) type_error(std::string(fn) + ": " + name + " must be a NumPy array or None");
    return py::reinterpret_borrow<py::array>(obj);
}

bool is_float64(const py::array& a, const char* fn, const char* name) {
    if (a.dtype().is(py::dtype::of<double>())) return true;
    if (a.dtype().is(py::dtype::of<float>())) return false;
    type_error(std::string(fn) + ": " + name + " has dtype " + std::string(py::str(a.dtype())) +
               "; accepted dtypes are float32 and float64");
}

// Calls f(T{}) with T the float type of `a` (float or double).
template <typename F>
void by_dtype(const py::array& a, const char* fn, const char* name, F&& f) {
    if (is_float64(a, fn, name)) f(double{});
    else f(float{});
}

// Optional int64 indices output (None: not recorded).
int64_t* optional_indices(const py::object& indices, int64_t expected, const char* fn, py::array& holder) {
    if (indices.is_none()) return nullptr;
    holder = optional_array(indices, fn, "indices");
    return output<int64_t>(holder, expected, fn, "indices");
}

[[noreturn]] void bad_index(const char* fn, int64_t position) {
    throw std::invalid_argument(std::string(fn) + ": indices[" + std::to_string(position) +
                                "] (flat position) points outside its pooling window or plane");
}

void check_norm(double p) {
    if (!(p > 0) || p > 1e300) throw std::invalid_argument("lp_pool2d: norm_type must be finite and positive");
}

void check_divisor(int64_t divisor_override) {
    if (divisor_override > (int64_t(1) << 62) || divisor_override < -(int64_t(1) << 62))
        throw std::invalid_argument("avg_pool2d: divisor_override is out of range");
}

// ---------------------------------------------------------------- conv ----

void conv_forward(const ConvGeometry& g, const py::array& x, const py::array& w, const py::object& bias,
                  py::array& y) {
    const char* fn = "conv2d_forward";
    validate(g, fn);
    by_dtype(x, fn, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, g.x_size(), fn, "x");
        const T* pw = input<T>(w, g.w_size(), fn, "w");
        const T* pb = bias.is_none() ? nullptr : input<T>(optional_array(bias, fn, "bias"), g.out_channels, fn, "bias");
        T* py_ = output<T>(y, g.y_size(), fn, "y");
        py::gil_scoped_release release;
        conv2d_forward<T>(g, px, pw, pb, py_);
    });
}

void conv_backward_data(const ConvGeometry& g, const py::array& gy, const py::array& w, py::array& gx) {
    const char* fn = "conv2d_backward_data";
    validate(g, fn);
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        const T* pw = input<T>(w, g.w_size(), fn, "w");
        T* pgx = output<T>(gx, g.x_size(), fn, "grad_x");
        py::gil_scoped_release release;
        conv2d_backward_data<T>(g, pgy, pw, pgx);
    });
}

void conv_backward_weight(const ConvGeometry& g, const py::array& gy, const py::array& x, py::array& gw) {
    const char* fn = "conv2d_backward_weight";
    validate(g, fn);
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* pgw = output<T>(gw, g.w_size(), fn, "grad_w");
        py::gil_scoped_release release;
        conv2d_backward_weight<T>(g, pgy, px, pgw);
    });
}

void conv_backward_bias(const ConvGeometry& g, const py::array& gy, py::array& gb) {
    const char* fn = "conv2d_backward_bias";
    validate(g, fn);
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        T* pgb = output<T>(gb, g.out_channels, fn, "grad_bias");
        py::gil_scoped_release release;
        conv2d_backward_bias<T>(g, pgy, pgb);
    });
}

// ---------------------------------------------------------------- pools ---

void max_forward(const PoolGeometry& g, const py::array& x, py::array& y, const py::object& indices) {
    const char* fn = "max_pool2d_forward";
    validate(g, fn);
    by_dtype(x, fn, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* py_ = output<T>(y, g.y_size(), fn, "y");
        py::array holder;
        int64_t* pi = optional_indices(indices, g.y_size(), fn, holder);
        py::gil_scoped_release release;
        max_pool2d_forward<T>(g, px, py_, pi);
    });
}

void max_backward(const PoolGeometry& g, const py::array& gy, const py::array& indices, py::array& gx) {
    const char* fn = "max_pool2d_backward";
    validate(g, fn);
    int64_t bad = -1;
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        const int64_t* pi = input<int64_t>(indices, g.y_size(), fn, "indices");
        T* pgx = output<T>(gx, g.x_size(), fn, "grad_x");
        py::gil_scoped_release release;
        bad = max_pool2d_backward<T>(g, pgy, pi, pgx);
    });
    if (bad >= 0) bad_index(fn, bad);
}

void avg_forward(const PoolGeometry& g, bool include_pad, int64_t divisor, const py::array& x, py::array& y) {
    const char* fn = "avg_pool2d_forward";
    validate(g, fn);
    check_divisor(divisor);
    by_dtype(x, fn, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* py_ = output<T>(y, g.y_size(), fn, "y");
        py::gil_scoped_release release;
        avg_pool2d_forward<T>(g, include_pad, divisor, px, py_);
    });
}

void avg_backward(const PoolGeometry& g, bool include_pad, int64_t divisor, const py::array& gy, py::array& gx) {
    const char* fn = "avg_pool2d_backward";
    validate(g, fn);
    check_divisor(divisor);
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        T* pgx = output<T>(gx, g.x_size(), fn, "grad_x");
        py::gil_scoped_release release;
        avg_pool2d_backward<T>(g, include_pad, divisor, pgy, pgx);
    });
}

void lp_forward(const PoolGeometry& g, double p, const py::array& x, py::array& y) {
    const char* fn = "lp_pool2d_forward";
    validate(g, fn);
    check_norm(p);
    by_dtype(x, fn, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* py_ = output<T>(y, g.y_size(), fn, "y");
        py::gil_scoped_release release;
        lp_pool2d_forward<T>(g, p, px, py_);
    });
}

void lp_backward(const PoolGeometry& g, double p, const py::array& gy, const py::array& x, py::array& gx) {
    const char* fn = "lp_pool2d_backward";
    validate(g, fn);
    check_norm(p);
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* pgx = output<T>(gx, g.x_size(), fn, "grad_x");
        py::gil_scoped_release release;
        lp_pool2d_backward<T>(g, p, pgy, px, pgx);
    });
}

void adaptive_avg_forward(const AdaptiveGeometry& g, const py::array& x, py::array& y) {
    const char* fn = "adaptive_avg_pool2d_forward";
    validate(g, fn);
    by_dtype(x, fn, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* py_ = output<T>(y, g.y_size(), fn, "y");
        py::gil_scoped_release release;
        adaptive_avg_pool2d_forward<T>(g, px, py_);
    });
}

void adaptive_avg_backward(const AdaptiveGeometry& g, const py::array& gy, py::array& gx) {
    const char* fn = "adaptive_avg_pool2d_backward";
    validate(g, fn);
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        T* pgx = output<T>(gx, g.x_size(), fn, "grad_x");
        py::gil_scoped_release release;
        adaptive_avg_pool2d_backward<T>(g, pgy, pgx);
    });
}

void adaptive_max_forward(const AdaptiveGeometry& g, const py::array& x, py::array& y, const py::object& indices) {
    const char* fn = "adaptive_max_pool2d_forward";
    validate(g, fn);
    by_dtype(x, fn, "x", [&](auto zero) {
        using T = decltype(zero);
        const T* px = input<T>(x, g.x_size(), fn, "x");
        T* py_ = output<T>(y, g.y_size(), fn, "y");
        py::array holder;
        int64_t* pi = optional_indices(indices, g.y_size(), fn, holder);
        py::gil_scoped_release release;
        adaptive_max_pool2d_forward<T>(g, px, py_, pi);
    });
}

void adaptive_max_backward(const AdaptiveGeometry& g, const py::array& gy, const py::array& indices, py::array& gx) {
    const char* fn = "adaptive_max_pool2d_backward";
    validate(g, fn);
    int64_t bad = -1;
    by_dtype(gy, fn, "grad_y", [&](auto zero) {
        using T = decltype(zero);
        const T* pgy = input<T>(gy, g.y_size(), fn, "grad_y");
        const int64_t* pi = input<int64_t>(indices, g.y_size(), fn, "indices");
        T* pgx = output<T>(gx, g.x_size(), fn, "grad_x");
        py::gil_scoped_release release;
        bad = adaptive_max_pool2d_backward<T>(g, pgy, pi, pgx);
    });
    if (bad >= 0) bad_index(fn, bad);
}

Isa isa_from_name(const std::string& name) {
    if (name == "generic") return Isa::generic;
    if (name == "avx2") return Isa::avx2;
    if (name == "avx512") return Isa::avx512;
    throw std::invalid_argument("set_isa: isa must be 'generic', 'avx2' or 'avx512', got '" + name + "'");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "convkit native CPU kernels (internal; use the convkit package)";

    py::class_<ConvGeometry>(m, "ConvGeometry")
        .def(py::init<>())
        .def_readwrite("batch", &ConvGeometry::batch)
        .def_readwrite("in_channels", &ConvGeometry::in_channels)
        .def_readwrite("in_h", &ConvGeometry::in_h)
        .def_readwrite("in_w", &ConvGeometry::in_w)
        .def_readwrite("out_channels", &ConvGeometry::out_channels)
        .def_readwrite("kernel_h", &ConvGeometry::kernel_h)
        .def_readwrite("kernel_w", &ConvGeometry::kernel_w)
        .def_readwrite("out_h", &ConvGeometry::out_h)
        .def_readwrite("out_w", &ConvGeometry::out_w)
        .def_readwrite("stride_h", &ConvGeometry::stride_h)
        .def_readwrite("stride_w", &ConvGeometry::stride_w)
        .def_readwrite("pad_top", &ConvGeometry::pad_top)
        .def_readwrite("pad_left", &ConvGeometry::pad_left)
        .def_readwrite("dilation_h", &ConvGeometry::dilation_h)
        .def_readwrite("dilation_w", &ConvGeometry::dilation_w)
        .def_readwrite("groups", &ConvGeometry::groups);

    py::class_<PoolGeometry>(m, "PoolGeometry")
        .def(py::init<>())
        .def_readwrite("planes", &PoolGeometry::planes)
        .def_readwrite("in_h", &PoolGeometry::in_h)
        .def_readwrite("in_w", &PoolGeometry::in_w)
        .def_readwrite("out_h", &PoolGeometry::out_h)
        .def_readwrite("out_w", &PoolGeometry::out_w)
        .def_readwrite("kernel_h", &PoolGeometry::kernel_h)
        .def_readwrite("kernel_w", &PoolGeometry::kernel_w)
        .def_readwrite("stride_h", &PoolGeometry::stride_h)
        .def_readwrite("stride_w", &PoolGeometry::stride_w)
        .def_readwrite("pad_h", &PoolGeometry::pad_h)
        .def_readwrite("pad_w", &PoolGeometry::pad_w)
        .def_readwrite("dilation_h", &PoolGeometry::dilation_h)
        .def_readwrite("dilation_w", &PoolGeometry::dilation_w);

    py::class_<AdaptiveGeometry>(m, "AdaptiveGeometry")
        .def(py::init<>())
        .def_readwrite("planes", &AdaptiveGeometry::planes)
        .def_readwrite("in_h", &AdaptiveGeometry::in_h)
        .def_readwrite("in_w", &AdaptiveGeometry::in_w)
        .def_readwrite("out_h", &AdaptiveGeometry::out_h)
        .def_readwrite("out_w", &AdaptiveGeometry::out_w);

    m.def("conv2d_forward", &conv_forward, py::arg("g"), py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"));
    m.def("conv2d_backward_data", &conv_backward_data, py::arg("g"), py::arg("grad_y"), py::arg("w"), py::arg("grad_x"));
    m.def("conv2d_backward_weight", &conv_backward_weight, py::arg("g"), py::arg("grad_y"), py::arg("x"), py::arg("grad_w"));
    m.def("conv2d_backward_bias", &conv_backward_bias, py::arg("g"), py::arg("grad_y"), py::arg("grad_bias"));
    m.def("max_pool2d_forward", &max_forward, py::arg("g"), py::arg("x"), py::arg("y"), py::arg("indices"));
    m.def("max_pool2d_backward", &max_backward, py::arg("g"), py::arg("grad_y"), py::arg("indices"), py::arg("grad_x"));
    m.def("avg_pool2d_forward", &avg_forward, py::arg("g"), py::arg("count_include_pad"), py::arg("divisor_override"), py::arg("x"), py::arg("y"));
    m.def("avg_pool2d_backward", &avg_backward, py::arg("g"), py::arg("count_include_pad"), py::arg("divisor_override"), py::arg("grad_y"), py::arg("grad_x"));
    m.def("lp_pool2d_forward", &lp_forward, py::arg("g"), py::arg("norm_type"), py::arg("x"), py::arg("y"));
    m.def("lp_pool2d_backward", &lp_backward, py::arg("g"), py::arg("norm_type"), py::arg("grad_y"), py::arg("x"), py::arg("grad_x"));
    m.def("adaptive_avg_pool2d_forward", &adaptive_avg_forward, py::arg("g"), py::arg("x"), py::arg("y"));
    m.def("adaptive_avg_pool2d_backward", &adaptive_avg_backward, py::arg("g"), py::arg("grad_y"), py::arg("grad_x"));
    m.def("adaptive_max_pool2d_forward", &adaptive_max_forward, py::arg("g"), py::arg("x"), py::arg("y"), py::arg("indices"));
    m.def("adaptive_max_pool2d_backward", &adaptive_max_backward, py::arg("g"), py::arg("grad_y"), py::arg("indices"), py::arg("grad_x"));

    m.def("get_num_threads", &num_threads);
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: n must be a positive int, got " + std::to_string(n));
        set_num_threads(n);
    }, py::arg("n"));
    m.def("active_isa", []() { return std::string(isa_name(active_isa())); });
    m.def("best_isa", []() { return std::string(isa_name(best_supported_isa())); });
    m.def("set_isa", [](const std::string& name) { set_active_isa(isa_from_name(name)); }, py::arg("isa"));
    m.def("measure_peak_gflops", [](int64_t iterations) {
        if (iterations < 1) throw std::invalid_argument("measure_peak_gflops: iterations must be positive");
        py::gil_scoped_release release;
        return measure_fma_peak_gflops(iterations);
    }, py::arg("iterations") = 20000000,
       "FP32 GFLOP/s of a register-only FMA loop on the active SIMD path and thread count");
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
}
