"""The simulated WeChat (flask_wechat_qr.sandbox), one test module per module of it."""
