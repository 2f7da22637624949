"""Classic pycaffe net surgery: edit weights in place, and cast a classifier's InnerProduct
layer into a convolution (BVLC's net_surgery example), checked against NumPy."""
import numpy as np

import caffe

with open("classifier.prototxt", "w") as f:
    f.write('''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 }
                        bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
''')
# The same net, fully convolutional: fc becomes a 4 x 4 convolution over a larger input.
with open("full_conv.prototxt", "w") as f:
    f.write('''name: "small_full_conv"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc-conv" type: "Convolution" bottom: "conv1" top: "fc-conv"
  convolution_param { num_output: 5 kernel_size: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc-conv" top: "prob" }
''')

caffe.set_mode_cpu()
net = caffe.Net("classifier.prototxt", caffe.TEST)
assert net._layer_names == ["data", "conv1", "relu1", "fc", "prob"]
assert [layer.type for layer in net.layers] == ["Input", "Convolution", "ReLU", "InnerProduct",
                                                "Softmax"]
assert net.bottom_names["fc"] == ["conv1"] and net.top_names["relu1"] == ["conv1"]
assert net.blobs["conv1"].num == 1 and net.blobs["conv1"].channels == 3
assert (net.blobs["conv1"].height, net.blobs["conv1"].width) == (4, 4)
assert net.blobs["conv1"].count == 48

# Edit a filter in place and check the convolution against NumPy.
net.params["conv1"][0].data[0] = 0.0
net.params["conv1"][0].data[0, 0, 1, 1] = 1.0        # filter 0: the centre of channel 0
net.params["conv1"][1].data[0] = 0.5
x = np.random.RandomState(0).randn(1, 2, 6, 6).astype(np.float32)
net.blobs["data"].data[...] = x
out = net.forward()
np.testing.assert_allclose(net.blobs["conv1"].data[0, 0],
                           np.maximum(x[0, 0, 1:5, 1:5] + 0.5, 0), rtol=1e-6)
np.testing.assert_allclose(out["prob"].sum(), 1.0, rtol=1e-6)
assert out["prob"] is net.blobs["prob"].data        # forward returns the blob's own array
net.save("classifier.caffemodel")

# Transplant: copy conv1 by name, fc's weights into fc-conv by flattening.
full = caffe.Net("full_conv.prototxt", "classifier.caffemodel", caffe.TEST)
np.testing.assert_array_equal(full.params["conv1"][0].data, net.params["conv1"][0].data)
full.params["fc-conv"][0].data.flat = net.params["fc"][0].data.flat
full.params["fc-conv"][1].data[...] = net.params["fc"][1].data
big = np.random.RandomState(1).randn(1, 2, 8, 8).astype(np.float32)
full.blobs["data"].data[...] = big
full_prob = full.forward()["prob"]
assert full_prob.shape == (1, 5, 3, 3)
# Each output location equals the classifier on the matching 6 x 6 window.
for i in range(3):
    for j in range(3):
        window = net.forward(data=big[:, :, i:i + 6, j:j + 6])["prob"][0]
        np.testing.assert_allclose(full_prob[0, :, i, j], window, rtol=1e-5, atol=1e-7)

# share_with: the full net now reads the classifier's conv1 weights.
net.params["conv1"][0].data[...] *= 2
assert not np.allclose(full.params["conv1"][0].data, net.params["conv1"][0].data)
full.share_with(net)
np.testing.assert_array_equal(full.params["conv1"][0].data, net.params["conv1"][0].data)
print("OK")
