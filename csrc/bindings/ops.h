// One binding function per op folder; module.cpp calls them all.
#pragma once

#include <nanobind/nanobind.h>

namespace xmodal::bindings {

void bind_knn(nanobind::module_& m);
void bind_coreset(nanobind::module_& m);
void bind_mlp(nanobind::module_& m);
void bind_ransac(nanobind::module_& m);
void bind_dbscan(nanobind::module_& m);
void bind_pointcloud(nanobind::module_& m);
void bind_ccl(nanobind::module_& m);
void bind_pro(nanobind::module_& m);
void bind_auroc(nanobind::module_& m);
void bind_fpfh(nanobind::module_& m);
void bind_mahalanobis(nanobind::module_& m);
void bind_anisotropic(nanobind::module_& m);

}  // namespace xmodal::bindings
