'use strict';
// osls plugin: after serverless-python-requirements has installed the bundle's requirements (same
// hook, earlier plugin), compile them to python3.12 bytecode (see infra/aws/bytecode.py).
const { execFileSync } = require('child_process');
const path = require('path');

class Bytecode {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = {
      'before:package:createDeploymentArtifacts': () => this.run([path.join('.serverless', 'requirements'), '.']),
      // the bundle is written: take our code's unchecked bytecode out of the source tree again, or a later
      // python3.12 run there would import it in place of sources edited since
      'after:package:createDeploymentArtifacts': () => this.run(['--clean', '.']),
    };
  }

  run(args) {
    const custom = this.serverless.service.custom || {};
    const python = (custom.bytecode && custom.bytecode.python) || 'python3.12';
    const service = this.serverless.config.servicePath;
    execFileSync(python, [path.join('infra', 'aws', 'bytecode.py'), ...args], { cwd: service, stdio: 'inherit' });
  }
}

module.exports = Bytecode;
